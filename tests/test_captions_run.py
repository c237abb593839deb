"""`discodiff captions` end to end on rendered Bach chorales: tags → rephrase (template) → rank (basic-pitch) →
release, loaded back with `datasets`; the same seed gives byte-identical output; a step killed with SIGKILL and rerun
gives the same output with no duplicates; changed settings are refused without --overwrite."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discodiff.cli import app
from test_training import free_port

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
PIECES = ["bach/bwv1.6", "bach/bwv10.7", "bach/bwv101.7", "bach/bwv102.7", "bach/bwv103.6", "bach/bwv104.6"]
REFERENCE = ["bach/bwv108.6", "bach/bwv11.6", "bach/bwv110.7", "bach/bwv111.6", "bach/bwv112.5", "bach/bwv113.8"]
SECONDS = 6.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six train-split chorales as candidates and six others as the ranking's reference (6 s each, seed 0)."""
    render = pytest.importorskip("discodiff.corpus.render", reason="rendering needs the render extra")
    pytest.importorskip("onnxruntime", reason="the basic-pitch embedder needs onnxruntime (scripts/install.sh --test)")
    root = tmp_path_factory.mktemp("captions")
    render.render_corpus(PIECES, root / "clips", seconds=SECONDS, seed=0, progress=False)
    render.render_corpus(REFERENCE, root / "reference", seconds=SECONDS, seed=0, progress=False)
    return root


def invoke(*args) -> str:
    result = runner.invoke(app, ["captions", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def build(corpus: Path, work: Path, out: Path, seed: int = 0) -> Path:
    invoke("tags", corpus / "clips", "--work", work, "--quiet")
    invoke("rephrase", "--work", work, "--seed", seed, "--batch-size", 2, "--quiet")
    invoke("rank", "--work", work, "--reference", corpus / "reference", "--embedder", "basic-pitch", "--keep-top", 0.5,
           "--quiet")
    invoke("release", "--work", work, "--out", out, "--quiet")
    return out


def digests(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def released(corpus):
    return build(corpus, corpus / "work", corpus / "dataset")


def test_the_release_loads_with_datasets_and_keeps_the_best_half(corpus, released):
    import datasets

    from discodiff.captions.rank import read_ranking_csv

    ranking = read_ranking_csv(corpus / "work" / "rank" / "ranking.csv")
    assert [row["percentile"] for row in ranking] == sorted((row["percentile"] for row in ranking), reverse=True)
    best = {row["id"] for row in ranking[:3]}
    table = datasets.load_dataset(str(released), cache_dir=str(corpus / "hf-cache"))["train"]
    assert set(table["id"]) == best and len(table) == 3
    card = (released / "README.md").read_text()
    for column in table.column_names:
        assert f"| {column} |" in card or f"| `{column}` |" in card
    for row in table:
        metadata = json.loads((corpus / "clips" / row["id"] / "metadata.json").read_text())
        assert row["key"] == metadata["key"] and row["tempo_bpm"] == metadata["tempo_bpm"]
        assert len(row["captions"]) == 3 and all(metadata["key"].lower() in caption.lower() for caption in row["captions"])
        provenance = json.loads(row["provenance"])
        assert provenance["rephrase"]["rephraser"] == "template" and provenance["rank"]["embedder"] == "basic-pitch"


def test_same_seed_is_byte_identical_and_another_seed_is_not(corpus, released, tmp_path):
    again = build(corpus, tmp_path / "work", tmp_path / "dataset")
    assert digests(again) == digests(released)
    assert (tmp_path / "work" / "rank" / "ranking.csv").read_bytes() == \
        (corpus / "work" / "rank" / "ranking.csv").read_bytes()
    other = build(corpus, tmp_path / "work-seed-1", tmp_path / "dataset-seed-1", seed=1)
    assert digests(other) != digests(released)


def test_changed_settings_are_refused_without_overwrite(corpus, released, tmp_path):
    work = tmp_path / "work"
    invoke("tags", corpus / "clips", "--work", work, "--quiet")
    invoke("rephrase", "--work", work, "--quiet")
    result = runner.invoke(app, ["captions", "rephrase", "--work", str(work), "--seed", "5", "--quiet"])
    assert result.exit_code == 1 and "other settings (changed: seed)" in result.output and "--overwrite" in result.output
    invoke("rephrase", "--work", work, "--seed", 5, "--overwrite", "--quiet")
    record = json.loads(next((work / "rephrase" / "records").iterdir()).read_text())
    assert record["seed"] in range(5, 5 + len(PIECES))
    result = runner.invoke(app, ["captions", "tags", str(corpus / "reference"), "--work", str(work), "--quiet"])
    assert result.exit_code == 1 and "for other clips" in result.output


def plain_build(clips: Path, work: Path, out: Path) -> Path:
    invoke("tags", clips, "--work", work, "--license", "mit", "--quiet")
    invoke("rephrase", "--work", work, "--quiet")
    invoke("release", "--work", work, "--out", out, "--quiet")
    return out


def test_sigkill_mid_step_then_rerun_gives_the_same_release(corpus, tmp_path):
    """A plain folder of audio (no metadata: tempo and key come from librosa, the slow step). Kill the tags step with
    SIGKILL after its first records, rerun every step: the release equals an uninterrupted run's, record for record."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for piece in PIECES:
        name = piece.replace("/", "-")
        (clips / f"{name}.wav").symlink_to(corpus / "clips" / name / "mixture.wav")
    reference = plain_build(clips, tmp_path / "work-a", tmp_path / "dataset-a")

    work = tmp_path / "work-b"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "discodiff.cli", "captions", "tags", str(clips), "--work", str(work),
               "--license", "mit", "--quiet"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = work / "tags" / "records"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if records.is_dir() and any(records.glob("*.json")):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(records.glob("*.json")))
    assert 1 <= done < len(PIECES), f"{done} records when killed: the test proves nothing"
    rebuilt = plain_build(clips, work, tmp_path / "dataset-b")
    assert digests(rebuilt) == digests(reference)
    names = sorted(path.name for path in records.iterdir())
    assert names == sorted(path.name for path in (tmp_path / "work-a" / "tags" / "records").iterdir())
    assert len(names) == len(PIECES)


@pytest.mark.slow  # three 2-process launches, about a minute; the sharding logic is shared with `discodiff eval`'s test
def test_accelerate_launch_shards_the_steps_and_gives_the_same_release(corpus, released, tmp_path):
    """Two CPU processes (configs/accelerate/cpu_ddp.yaml): each takes every other fixed batch of every step; the
    records, the ranking and the release are byte-identical to the single-process run's."""
    work = tmp_path / "work"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "cpu_ddp.yaml")]
    for step in (["tags", str(corpus / "clips")], ["rephrase", "--batch-size", "2"],
                 ["rank", "--reference", str(corpus / "reference"), "--embedder", "basic-pitch", "--keep-top", "0.5"]):
        command = [*launch, "--main_process_port", str(free_port()), "-m", "discodiff.cli", "captions", *step,
                   "--work", str(work), "--quiet"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    for step in ("tags", "rephrase", "rank"):
        assert digests(work / step) == digests(corpus / "work" / step), step
    invoke("release", "--work", work, "--out", tmp_path / "dataset", "--quiet")
    assert digests(tmp_path / "dataset") == digests(released)


def test_a_saved_reference_ranks_like_its_reference_clips(corpus, released, tmp_path):
    """The fitted statistics of a rank step (rank/reference.npz) are reusable: ranking with them instead of the
    reference clips gives the same ranking; with another embedder's settings they are refused."""
    work = tmp_path / "work"
    invoke("tags", corpus / "clips", "--work", work, "--quiet")
    saved = corpus / "work" / "rank" / "reference.npz"
    invoke("rank", "--work", work, "--reference", saved, "--embedder", "basic-pitch", "--keep-top", 0.5, "--quiet")
    assert (work / "rank" / "ranking.csv").read_bytes() == (corpus / "work" / "rank" / "ranking.csv").read_bytes()
    result = runner.invoke(app, ["captions", "rank", "--work", str(work), "--reference", str(saved),
                                 "--embedder", "crepe", "--quiet"])
    assert result.exit_code == 1 and "fitted on embeddings of other settings" in result.output, result.output


from test_caption_describe import tiny_model_dir  # noqa: E402,F401  (fixtures: a tiny random Qwen2-Audio,
from test_caption_rephrase import tiny_chat_model_dir  # noqa: E402,F401  and a tiny random Qwen2 chat model)


def test_model_steps_through_the_command_line_record_what_made_each_row(corpus, tiny_model_dir, tiny_chat_model_dir,
                                                                         tmp_path):
    """describe and rephrase with tiny random transformers models (the real loaders' code path): every candidate
    caption is kept or counted as a drop, and each row's provenance names the models, templates and seeds."""
    import datasets

    work, out = tmp_path / "work", tmp_path / "dataset"
    invoke("describe", corpus / "clips", "--work", work, "--model", tiny_model_dir, "--batch-size", 2, "--device",
           "cpu", "--quiet")
    invoke("tags", corpus / "clips", "--work", work, "--quiet")
    invoke("rephrase", "--work", work, "--model", tiny_chat_model_dir, "--num-captions", 2, "--batch-size", 3,
           "--device", "cpu", "--quiet")
    records = [json.loads(path.read_text()) for path in sorted((work / "rephrase" / "records").iterdir())]
    assert len(records) == len(PIECES)
    for record in records:
        assert len(record["candidates"]) <= 2
        assert len(record["captions"]) + sum(record["dropped"].values()) == len(record["candidates"])
    descriptions = {json.loads(p.read_text())["id"]: json.loads(p.read_text())
                    for p in (work / "describe" / "records").iterdir()}
    assert [descriptions[f"bach-bwv{n}"]["seed"] for n in ("1.6", "10.7", "101.7")] == [0, 0, 2]  # fixed batches of 2
    kept = [record for record in records if record["captions"]]
    if not kept:
        pytest.skip("the random model's captions were all filtered (counted above); nothing to release")
    invoke("release", "--work", work, "--out", out, "--quiet")
    # a cache of its own: datasets' default cache can serve an earlier folder's rows for a new folder of equal files
    table = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert len(table) == len(kept)
    for row in table:
        provenance = json.loads(row["provenance"])
        assert provenance["describe"]["model"] == str(tiny_model_dir)
        assert provenance["rephrase"]["model"] == str(tiny_chat_model_dir)
        assert provenance["describe"]["template"] == "describe-v1" and provenance["rephrase"]["template"] == "rephrase-v1"
        assert row["description"] == descriptions[row["id"]]["description"]
