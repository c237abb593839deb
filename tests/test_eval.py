"""`discodiff eval` (discodiff.evaluation.protocol): two tiny models of two families × three rendered validation-split
Bach chorales → a report folder; a run killed after one item resumes to the same numbers without generating that item
again; other settings are refused without --overwrite; a codec model is refused; a prompt list is evaluated text
only (no reference: distances null with the reason, CLAP score with a tiny CLAP)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("librosa")
pytest.importorskip("torchcrepe")
pytest.importorskip("music21")
pytest.importorskip("fluidsynth")

from discodiff.cli import app  # noqa: E402
from discodiff.evaluation import protocol  # noqa: E402
from test_training import free_port  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def validation_pieces(count: int) -> list[str]:
    recorded = json.loads((REPO / "discodiff" / "corpus" / "bach_split.json").read_text())["split"]
    return sorted(piece for piece, split in recorded.items() if split == "validation")[:count]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny untrained models (diffusion, AR), a tiny codec model, three rendered validation chorales (3 s)."""
    from discodiff.corpus.render import render_corpus
    from discodiff.pipeline_utils import build_from_config

    root = tmp_path_factory.mktemp("eval")
    for name, config in (("diff", "tiny.yaml"), ("ar", "ar_tiny.yaml"), ("codec", "codec/tiny.yaml")):
        build_from_config(REPO / "configs" / config, seed=0).save_pretrained(root / name)
    render_corpus(validation_pieces(3), root / "rendered", seconds=3.0, seed=0, progress=False)
    return root


def run_eval(*args) -> object:
    return runner.invoke(app, ["eval", *map(str, args)])


def eval_args(world, out, *extra):
    return ("--model", world / "diff", "--model", f"auto={world / 'ar'}", "--data", world / "rendered", "--seconds", 2,
            "--steps", 2, "--bootstrap", 200, "--out", out, "--quiet", *extra)


@pytest.fixture(scope="module")
def reference_run(world):
    out = world / "reference_run"
    result = run_eval(*eval_args(world, out))
    assert result.exit_code == 0, result.output
    return out, result.output


def walk(value, path="$"):
    """Every (path, leaf) of a JSON value, and every dict."""
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")
    else:
        yield path, value


def check_numbers(record: dict) -> None:
    """Every number finite; every null measure says why."""
    for path, value in walk(record):
        if isinstance(value, float):
            assert math.isfinite(value), path
        if isinstance(value, dict) and "value" in value and value["value"] is None:
            assert isinstance(value.get("reason"), str) and value["reason"], path


def without_speed(record: dict) -> dict:
    record = json.loads(json.dumps(record))
    for model in record["models"].values():
        model.pop("speed")
    return record


# --- end to end -------------------------------------------------------------------------------------------------


def test_eval_writes_a_report_of_both_families_on_the_validation_tracks(world, reference_run):
    out, output = reference_run
    assert "diff (discodiff): KAD[crepe]" in output and "auto (ar): KAD[crepe]" in output
    record = json.loads((out / "metrics.json").read_text())
    check_numbers(record)
    ids = [piece.replace("/", "-") for piece in validation_pieces(3)]
    assert [item["id"] for item in record["evaluation_set"]["items"]] == ids
    assert [item["seed"] for item in record["evaluation_set"]["items"]] == [0, 1, 2]
    assert record["evaluation_set"]["split"] == "validation" and record["evaluation_set"]["seconds"] == 2.0
    assert set(record["versions"]) >= {"discodiff", "torch", "transformers", "numpy"}
    assert record["embedders"]["crepe"]["embedder"] == "crepe" and record["embedders"]["crepe"]["dim"] == 256
    models = record["models"]
    assert {name: model["family"] for name, model in models.items()} == {"diff": "discodiff", "auto": "ar"}
    assert models["diff"]["options"] == {"num_inference_steps": 2} and models["auto"]["options"] == {}
    for name, model in models.items():
        assert len(model["pipeline_json_sha256"]) == 64 and len(model["files_sha256"]) == 64
        kad = model["kad"]["crepe"]
        assert kad["n_generated"] == kad["n_reference"] == 3 and kad["ci_low"] <= kad["ci_high"]
        assert model["fad"]["crepe"]["value"] is None and "more clips than dimensions" in model["fad"]["crepe"]["reason"]
        assert model["fad_infinity"]["crepe"]["value"] is None
        assert model["clap_score"]["value"] is None
        for measure in ("harmonic", "consonance", "rhythmic"):
            assert model["vocal_fit"][measure]["n"] == 3
        speed = model["speed"]
        assert speed["items"] == 3 and speed["mean_rtf"] > 0 and speed["mean_wall_s_per_item"] > 0
        assert "text_encoder" in speed["parts_s"] and speed["max_peak_added_mib"] >= 0
        for item in ids:
            audio = out / "generated" / name / f"{item}.wav"
            assert audio.is_file() and json.loads(audio.with_suffix(".json").read_text())["speed"]["wall_s"] > 0
    # the real accompaniments fit their own vocals (rendered chorales: the same chords under the same melody)
    assert record["reference"]["vocal_fit"]["consonance"]["difference_mean"] > 0
    report = (out / "report.md").read_text()
    for heading in ("## KAD (crepe)", "## FAD (crepe)", "## Vocal fit", "## Speed", "| diff | discodiff |",
                    "| auto | ar |"):
        assert heading in report
    plots = sorted(path.name for path in (out / "plots").glob("*.png"))
    assert {"kad_crepe.png", "rtf.png", "quality_vs_speed.png", "vocal_fit_rhythmic.png"} <= set(plots)
    assert all((out / "plots" / name).read_bytes().startswith(b"\x89PNG") for name in plots)
    embeddings = list((out / "embeddings").glob("*/settings.json"))
    assert len(embeddings) == 1 and json.loads(embeddings[0].read_text()) == record["embedders"]["crepe"]
    assert sorted(p.name for p in embeddings[0].parent.iterdir()) == ["auto", "diff", "reference", "settings.json"]


def test_a_killed_run_resumes_to_the_same_numbers_without_generating_done_items(world, reference_run, monkeypatch):
    reference = json.loads((reference_run[0] / "metrics.json").read_text())
    calls = []
    real_generate = protocol.generate

    def counting(pipeline, prompts, vocal, duration, generators, options):
        calls.append((type(pipeline).__name__, tuple(prompts), generators[0].initial_seed()))
        if kill_after is not None and len(calls) > kill_after:
            raise RuntimeError("killed")
        return real_generate(pipeline, prompts, vocal, duration, generators, options)

    monkeypatch.setattr(protocol, "generate", counting)
    out = world / "resumed_run"
    kill_after = 1
    result = run_eval(*eval_args(world, out))
    assert isinstance(result.exception, RuntimeError) and len(calls) == 2
    first = out / "generated" / "diff" / f"{validation_pieces(1)[0].replace('/', '-')}.wav"
    assert first.is_file() and first.with_suffix(".json").is_file() and not (out / "metrics.json").exists()
    written = first.read_bytes()

    calls.clear()
    kill_after = None
    result = run_eval(*eval_args(world, out))
    assert result.exit_code == 0, result.output
    assert [seed for _, _, seed in calls] == [1, 2, 0, 1, 2]  # the diffusion model's item 0 is not generated again
    assert first.read_bytes() == written
    assert "2 generated, 1 from an earlier run" in result.output
    resumed = json.loads((out / "metrics.json").read_text())
    assert without_speed(resumed) == without_speed(reference)
    # the generated audio is the same as the uninterrupted run's, byte for byte
    for path in (reference_run[0] / "generated").rglob("*.wav"):
        assert (out / path.relative_to(reference_run[0])).read_bytes() == path.read_bytes()

    calls.clear()
    result = run_eval(*eval_args(world, out))
    assert result.exit_code == 0 and calls == []
    assert json.loads((out / "metrics.json").read_text()) == resumed  # speed too: read from the per-item records


def test_other_settings_are_refused_without_overwrite(world, reference_run):
    out = world / "settings_run"
    shutil.copytree(reference_run[0], out)
    before = {p: p.read_bytes() for p in (out / "generated").rglob("*.wav")}
    result = run_eval(*eval_args(world, out, "--seed", 1))
    assert result.exit_code == 1 and "error: " in result.output and "--overwrite" in result.output
    assert "model diff with other settings (seed: 0 -> 1)" in result.output
    result = run_eval("--model", world / "diff", "--data", world / "rendered", "--seconds", 1.5, "--out", out)
    assert result.exit_code == 1 and "another evaluation set" in result.output and "seconds: 2.0 -> 1.5" in result.output
    assert {p: p.read_bytes() for p in (out / "generated").rglob("*.wav")} == before

    # --overwrite replaces only the work that changed: the diffusion model's generations, not the AR model's
    ar_files = {p: p.read_bytes() for p in (out / "generated" / "auto").iterdir()}
    result = run_eval(*eval_args(world, out, "--steps", 3, "--overwrite"))
    assert result.exit_code == 0, result.output
    assert "diff (discodiff)" in result.output and "3 generated, 0 from an earlier run" in result.output
    assert {p: p.read_bytes() for p in (out / "generated" / "auto").iterdir() if p.name != "model.json"} == \
           {p: data for p, data in ar_files.items() if p.name != "model.json"}
    record = json.loads((out / "metrics.json").read_text())
    assert record["models"]["diff"]["options"] == {"num_inference_steps": 3}

    unrelated = world / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("mine")
    result = run_eval("--model", world / "diff", "--data", world / "rendered", "--out", unrelated)
    assert result.exit_code == 1 and "non-empty folder" in result.output


def test_inputs_are_checked_before_any_model_loads(world, tmp_path):
    data, out = world / "rendered", tmp_path / "out"
    cases = [
        (("--model", world / "codec", "--data", data), "is a 'codec' model, which does not generate music"),
        (("--model", world / "diff"), "give exactly one of --data"),
        (("--model", world / "diff", "--data", data, "--prompts", data / "captions.jsonl"), "give exactly one of --data"),
        (("--model", world / "diff", "--data", data, "--limit", 1), "--limit 1: must be at least 2"),
        (("--model", world / "diff", "--data", data, "--duration", 2), "--duration 2 is for --prompts"),
        (("--model", world / "diff", "--data", data, "--split", "test"), "--split must be one of"),
        (("--model", world / "diff", "--data", data, "--embedder", "vggish"), "--embedder must be one of"),
        (("--model", world / "diff", "--data", data, "--embedder", "codec"), "--embedder codec needs --embedder-codec"),
        (("--model", world / "diff", "--data", data, "--embedder-clap", "x"), "--embedder-clap is for the clap embedder"),
        (("--model", world / "ar", "--data", data, "--steps", 2), "--steps: not an option of any model given"),
        (("--model", world / "diff", "--model", f"diff={world / 'ar'}", "--data", data), "the name 'diff' is also"),
        (("--model", f"reference={world / 'ar'}", "--data", data), "cannot name a model"),
        (("--model", tmp_path, "--data", data), "is not a discodiff model directory"),
        (("--model", world / "diff", "--data", tmp_path / "none"), "--data"),
        (("--model", world / "diff", "--prompts", tmp_path / "none.txt"), "no such file"),
    ]
    for args, message in cases:
        result = run_eval(*args, "--out", out)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
        assert message in result.output, (args, result.output)
    result = run_eval("--model", world / "diff", "--data", data, "--out", data / "report")
    assert result.exit_code == 1 and "lies inside --data" in result.output
    assert not out.exists()


def test_a_prompt_list_is_evaluated_text_only_with_the_clap_score(world, tmp_path):
    from transformers import ClapFeatureExtractor, ClapProcessor

    from discodiff.conditioning.tiny import build_tiny_clap_model, build_tiny_clap_tokenizer

    clap = tmp_path / "clap"
    build_tiny_clap_model(seed=0).save_pretrained(clap)
    ClapProcessor(feature_extractor=ClapFeatureExtractor(), tokenizer=build_tiny_clap_tokenizer()).save_pretrained(clap)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a calm chorale for strings\n\na bright organ chorale\n")
    out = tmp_path / "report"
    result = run_eval("--model", world / "diff", "--model", world / "ar", "--prompts", prompts, "--duration", 1,
                      "--steps", 2, "--embedder", "crepe", "--embedder", "clap", "--embedder-clap", clap,
                      "--batch-size", 2, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    check_numbers(record)
    assert record["evaluation_set"]["kind"] == "prompts" and [i["id"] for i in record["evaluation_set"]["items"]] == \
           ["0000", "0001"]
    for model in record["models"].values():
        for key in ("kad", "fad", "fad_infinity"):
            for embedder in ("crepe", "clap"):
                assert model[key][embedder]["value"] is None and "no reference set" in model[key][embedder]["reason"]
        assert model["vocal_fit"]["value"] is None
        clap_score = model["clap_score"]
        assert clap_score["n"] == 2 and -1 <= clap_score["value"] <= 1
        assert model["speed"]["items"] == 2 and model["speed"]["batch_size"] == 2
    for name in ("diff", "ar"):
        records = [json.loads(p.read_text()) for p in sorted((out / "generated" / name).glob("0*.json"))]
        assert [r["batch_items"] for r in records] == [2, 2] and records[0]["speed"] == records[1]["speed"]
        assert all(r["samples"] == 44100 for r in records)
    assert (out / "plots" / "clap_score.png").is_file() and (out / "plots" / "quality_vs_speed.png").is_file()
    assert not (out / "plots" / "kad_crepe.png").exists()
    assert "no reference set" in (out / "report.md").read_text()


# --- pieces -----------------------------------------------------------------------------------------------------


def test_kad_measure_has_a_seeded_interval_around_the_estimate():
    from discodiff.evaluation.distances import kernel_distance

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 4)), rng.normal(0.5, 1.0, size=(5, 4))
    first, again = protocol.kad_measure(x, y, 300, seed=3), protocol.kad_measure(x, y, 300, seed=3)
    assert first == again and first["ci_low"] < first["value"] < first["ci_high"]
    assert first["value"] == pytest.approx(kernel_distance(x, y, kernel="rbf"), abs=1e-12)
    assert protocol.kad_measure(x, y, 0, seed=3)["ci_low"] is None


def test_fixed_batches_and_model_names():
    items = tuple(protocol.EvalItem(f"{i:04d}", i, "p", 1.0, "") for i in range(5))
    prompts = protocol.EvalSet("prompts", items, {"kind": "prompts", "duration": 1.0})
    assert protocol._calls(prompts, range(5), 2) == [[0, 1], [2, 3], [4]]
    assert protocol._calls(prompts, [1, 2, 4], 2) == [[1], [2], [4]]  # a resumed run keeps the batches
    assert protocol.parse_model("a=models/x") == ("a", Path("models/x"))
    assert protocol.parse_model("models/x/") == ("x", Path("models/x"))


# --- sharded across processes (accelerate launch) -----------------------------------------------------------------


def without_speed_or_device(record: dict) -> dict:
    record = without_speed(record)
    record["settings"].pop("device")
    return record


def test_accelerate_launch_shards_generation_and_embedding_and_merges_to_the_same_numbers(world, reference_run,
                                                                                         tmp_path):
    """``accelerate launch`` of configs/accelerate/cpu_ddp.yaml (2 CPU processes over gloo) runs this file as the
    script (:func:`shard_rank_main`): each process generates its fixed batches once, the main process writes the
    report, and its numbers (speed and device aside) and audio are the single-process run's."""
    import os
    import subprocess
    import sys

    out, log = tmp_path / "sharded", tmp_path / "calls"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs" / "accelerate" / "cpu_ddp.yaml"), "--main_process_port", str(free_port()),
               str(Path(__file__).resolve()), str(log), *map(str, eval_args(world, out))]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("3 generated, 0 from an earlier run") == 2  # printed by the main process only, once
    calls = {rank: [json.loads(line) for line in Path(f"{log}-{rank}.jsonl").read_text().splitlines()]
             for rank in (0, 1)}
    # fixed batches of 1 item: process 0 does items 0 and 2, process 1 item 1, of each model, each exactly once
    assert sorted(seed for _, seeds in calls[0] for seed in seeds) == [0, 0, 2, 2]
    assert sorted(seed for _, seeds in calls[1] for seed in seeds) == [1, 1]
    assert len({(kind, tuple(seeds)) for rank in calls for kind, seeds in calls[rank]}) == 6
    reference = json.loads((reference_run[0] / "metrics.json").read_text())
    sharded = json.loads((out / "metrics.json").read_text())
    # audio is byte-identical (below); analyses of it computed in other processes may differ in the last bit of a
    # float (BLAS summation order), so the numbers are compared to 1e-12
    assert_same_numbers(without_speed_or_device(sharded), without_speed_or_device(reference))
    assert {name: model["speed"]["items"] for name, model in sharded["models"].items()} == {"diff": 3, "auto": 3}
    for path in (reference_run[0] / "generated").rglob("*.wav"):
        assert (out / path.relative_to(reference_run[0])).read_bytes() == path.read_bytes()
    generated = sorted(p.relative_to(out).as_posix() for p in (out / "generated").rglob("*") if p.is_file())
    assert generated == sorted(p.relative_to(reference_run[0]).as_posix()
                               for p in (reference_run[0] / "generated").rglob("*") if p.is_file())
    assert (out / "report.md").is_file() and (out / "plots" / "kad_crepe.png").is_file()


def assert_same_numbers(ours, theirs, where: str = "metrics") -> None:
    """The same nested structure, strings and integers equal, floats within 1e-12 (relative) of each other."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict) and ours.keys() == theirs.keys(), where
        for key in ours:
            assert_same_numbers(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_numbers(a, b, f"{where}[{index}]")
    elif isinstance(ours, float) and isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), where
    else:
        assert ours == theirs, where


def shard_rank_main(log: str, args: list[str]) -> None:
    """One process of the sharded eval: log each generation call (pipeline, seeds) to ``<log>-<rank>.jsonl``, then
    run ``discodiff eval args``."""
    import os

    import torch

    torch.set_num_threads(1)
    rank, real_generate = os.environ["RANK"], protocol.generate

    def logged(pipeline, prompts, vocal, duration, generators, options):
        with open(f"{log}-{rank}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps([type(pipeline).__name__, [g.initial_seed() for g in generators]]) + "\n")
        return real_generate(pipeline, prompts, vocal, duration, generators, options)

    protocol.generate = logged
    app(["eval", *args])


if __name__ == "__main__":
    import sys

    shard_rank_main(sys.argv[1], sys.argv[2:])
