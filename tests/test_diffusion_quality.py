"""The diffusion model's quality benchmark (discodiff.bench.diffusion_quality) on the tiny model and a tiny latent
cache prepared from synthetic stems with the tiny codec: the record's structure and sanity, the v-loss against the
training task's own validation metric and an explicitly re-initialised copy, the w/ PL check against an oracle
secondary, and input errors. CPU only, no network."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("librosa")
pytest.importorskip("dac")

from discodiff.bench import diffusion_quality as bench  # noqa: E402
from discodiff.build import build_pipeline  # noqa: E402
from discodiff.cli.common import library_progress  # noqa: E402
from discodiff.codec import build_tiny_codec  # noqa: E402
from discodiff.config import DiscoDiffConfig  # noqa: E402
from discodiff.data.prepare import prepare_latent_cache  # noqa: E402
from discodiff.data.windows import WindowSettings  # noqa: E402
from discodiff.errors import ConfigError, DataError, ModelDirectoryError  # noqa: E402
from discodiff.latents import LatentStats  # noqa: E402
from discodiff.pipeline import DiscoDiffPipeline  # noqa: E402
from test_prepare import small_track  # noqa: E402

TINY_MODEL = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
WINDOWS = WindowSettings(window_seconds=1.0, min_seconds=0.5, quiet_dbfs=-40.0)  # 2 s tracks: two 87-frame windows
FRAMES, ITEMS, STEPS = 64, 2, 2
TIMES = (0.2, 0.6, 0.9)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny model with its output convolutions perturbed: a fresh U-Net predicts v = 0 (zero-initialised
    ``conv_out``), which would make the "trained" model the untrained one."""
    pipeline = build_pipeline(DiscoDiffConfig.from_yaml(TINY_MODEL), seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for unet in (pipeline.primary, pipeline.secondary):
            for tensor in (unet.conv_out.weight, unet.conv_out.bias):
                tensor.copy_(0.05 * torch.randn(tensor.shape, generator=generator))
    with library_progress(False):
        return pipeline.save_pretrained(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    stems, out = tmp_path_factory.mktemp("stems"), tmp_path_factory.mktemp("validation") / "cache"
    small_track(stems, "a")
    small_track(stems, "b", freqs=(261.6, 329.6, 392.0))
    prepare_latent_cache(stems, out, build_tiny_codec(seed=0), "tiny", windows=WINDOWS, progress=False)
    return out


def arguments(model_dir, cache_dir, *extra) -> list[str]:
    return ["--model", str(model_dir), "--data", str(cache_dir), "--limit", str(ITEMS), "--frames", str(FRAMES),
            "--steps", str(STEPS), "--times", *map(str, TIMES), "--device", "cpu", "--quiet", *extra]


@pytest.fixture(scope="module")
def record(model_dir, cache_dir) -> dict:
    """``main --json``: the record it returns, checked to be what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        returned = bench.main(arguments(model_dir, cache_dir, "--json"))
    assert json.loads(printed.getvalue()) == json.loads(json.dumps(returned))
    return returned


def loaded(model_dir, cache_dir) -> DiscoDiffPipeline:
    pipeline = DiscoDiffPipeline.from_pretrained(model_dir)
    assert bench.use_latent_stats(pipeline, cache_dir) == "data"
    return pipeline


def numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


# --- the record --------------------------------------------------------------------------------------------


def test_the_record_holds_finite_losses_ratios_and_scores_in_range(record):
    settings = record["settings"]
    assert (settings["items"], settings["frames"], settings["length_multiple"], settings["latent_stats"]) == (ITEMS, FRAMES, 4, "data")
    assert all(math.isfinite(x) for x in numbers(record))
    for stage in bench.STAGES:
        rows = record["loss"][stage]
        assert [row["t"] for row in rows] == [*TIMES, "mean"]
        for row in rows:
            assert row["trained"] > 0 and row["untrained"] > 0
            assert row["ratio"] == pytest.approx(row["trained"] / row["untrained"])
        assert any(abs(row["ratio"] - 1) > 1e-3 for row in rows), "the perturbed model must differ from an untrained one"
        assert rows[-1]["trained"] == pytest.approx(sum(row["trained"] for row in rows[:-1]) / len(TIMES))

    pl = record["with_primary"]
    assert (pl["steps"], pl["text_guidance"], pl["vocal_guidance"], pl["vocal"]) == (STEPS, 1.0, 1.0, True)
    assert len(pl["items"]) == ITEMS and all(item["seconds"] > 0 for item in pl["items"])
    for item in pl["items"]:
        for condition in bench.CONDITIONS:
            assert item[f"mel_distance_{condition}"] >= 0
            assert -1 <= item[f"chroma_similarity_{condition}"] <= 1
    for measure in bench.MEASURES:
        summary = pl[measure]
        values = {c: [item[f"{measure}_{c}"] for item in pl["items"]] for c in bench.CONDITIONS}
        for condition in bench.CONDITIONS:
            assert summary[condition]["n"] == ITEMS
            assert summary[condition]["mean"] == pytest.approx(sum(values[condition]) / ITEMS)
        difference = summary["difference"]
        assert difference["mean"] == pytest.approx(summary["true_primary"]["mean"] - summary["random_primary"]["mean"])
        diffs = [a - b for a, b in zip(values["true_primary"], values["random_primary"])]
        assert difference["std"] == pytest.approx(abs(diffs[0] - diffs[1]) / math.sqrt(2))  # ddof=1 of two values


def test_the_tables_show_every_stage_time_and_measure(record, capsys):
    bench.print_report(record)
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["stage", "t", "trained"])
    rows = [line.split() for line in lines[header + 1: header + 1 + 2 * (len(TIMES) + 1)]]
    assert [(row[0], row[1]) for row in rows] == [(stage, t) for stage in bench.STAGES for t in [*map(str, TIMES), "mean"]]
    loss = record["loss"]["secondary"][0]
    assert rows[len(TIMES) + 1][2:] == [f"{loss['trained']:.4f}", f"{loss['untrained']:.4f}", f"{loss['ratio']:.3f}"]
    assert any(line.startswith("mel distance (lower is better)") for line in lines)
    assert any(line.startswith("chroma similarity (higher is better)") for line in lines)


def test_losses_are_the_training_validation_metric_and_untrained_is_a_fresh_copy(record, model_dir, cache_dir):
    """The trained numbers equal the training task's ``val/loss_t<t>`` (same items, run seed); the untrained ones equal
    those of U-Nets and vocal encoders re-initialised here by hand, under the same seed."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from torch.utils.data import DataLoader

    from discodiff.data.dataset import LatentCropDataset, collate_latent_batch
    from discodiff.models import UNet1DConditionModel
    from discodiff.conditioning import VocalConditioner
    from discodiff.training.stage import StageModel, StageObjective
    from discodiff.training.validation import validation_loss

    pipeline = loaded(model_dir, cache_dir)
    dataset = LatentCropDataset(cache_dir, crop_frames=FRAMES, frame_multiple=4, seed=0, noisy_vocal_std=0.0)
    loader = DataLoader(torch.utils.data.Subset(dataset, range(ITEMS)), batch_size=bench.BATCH_SIZE,
                        collate_fn=collate_latent_batch)
    accelerator = Accelerator(cpu=True)
    try:
        for stage in bench.STAGES:
            torch.manual_seed(0)
            unet = UNet1DConditionModel.from_config(getattr(pipeline, stage).config)
            encoder = VocalConditioner.from_config(getattr(pipeline, f"{stage}_vocal_encoder").config)
            objective = StageObjective(pipeline, stage, 0.0, 0.0)
            models = {"trained": StageModel.from_pipeline(pipeline, stage), "untrained": StageModel(unet, encoder)}
            for name, model in models.items():
                metrics = validation_loss(accelerator, model.eval(), objective, loader, TIMES, seed=0)
                for row in record["loss"][stage][:-1]:
                    assert row[name] == pytest.approx(metrics[f"val/loss_t{row['t']:g}"], rel=1e-6), (stage, name, row)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def test_the_untrained_stage_is_seeded_and_leaves_the_pipeline_and_the_global_generator_alone(model_dir):
    pipeline = DiscoDiffPipeline.from_pretrained(model_dir)
    before = {name: {k: v.clone() for k, v in module.state_dict().items()}
              for name, module in pipeline.trainable_components().items()}
    rng = torch.random.get_rng_state()
    first, again, other = (bench.untrained_stage(pipeline, "primary", seed) for seed in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), rng)
    pairs = list(zip(first.state_dict().values(), again.state_dict().values(), other.state_dict().values()))
    assert all(torch.equal(a, b) for a, b, _ in pairs)
    assert any(not torch.equal(a, c) for a, _, c in pairs)
    assert first.unet is not pipeline.primary and first.vocal_encoder is not pipeline.primary_vocal_encoder
    trained = pipeline.primary.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in first.unet.state_dict().items())
    for name, module in pipeline.trainable_components().items():
        assert all(torch.equal(v, before[name][k]) for k, v in module.state_dict().items()), name


def test_the_model_s_own_fitted_statistics_win_over_the_data_s(model_dir, cache_dir):
    pipeline = DiscoDiffPipeline.from_pretrained(model_dir)
    data_stats = LatentStats.load(cache_dir / "dataset" / "latent_stats.json")
    own = LatentStats(data_stats.mean + 1, data_stats.std * 2, data_stats.codebook_dim, data_stats.per)
    pipeline.latent_stats = own
    assert bench.use_latent_stats(pipeline, cache_dir) == "model" and pipeline.latent_stats is own


# --- w/ PL against an oracle ------------------------------------------------------------------------------------


class OracleSecondary(torch.nn.Module):
    """Predicts the v that makes every step's x0 estimate the given true secondary ``x0 [B, C, L]`` (normalised), whatever
    primary it is given: ``v = (α·x_t − x0) / σ``."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0

    def forward(self, x, t, contexts, masks, pooled, condition_dropped=None):
        x0 = torch.cat([self.x0] * (x.shape[0] // self.x0.shape[0]))
        x_t = x[:, -x0.shape[1]:]
        alpha, sigma = (f(t * math.pi / 2)[:, None, None] for f in (torch.cos, torch.sin))
        return SimpleNamespace(sample=(alpha * x_t - x0) / sigma)


def test_with_the_true_primary_an_oracle_secondary_scores_as_the_codec_reconstruction(model_dir, cache_dir):
    """(b) is the secondary sampled over the item's own primary and scored against (a) on the same frames: a secondary
    that recovers the true detail gives (a) again (mel distance ~0, chroma ~1); over a random primary it does not."""
    from discodiff.training.stage import StageObjective

    pipeline = loaded(model_dir, cache_dir)
    batches = bench.load_batches(cache_dir, ITEMS, FRAMES, 4, seed=0)
    assert len(batches) == 1
    target = StageObjective(pipeline, "secondary", 0.0, 0.0).prepare(batches[0], pipeline.device).target
    pipeline.secondary = OracleSecondary(target)
    result = bench.with_primary(pipeline, batches, steps=3, seed=0, progress=False)
    for item in result["items"]:
        assert item["mel_distance_true_primary"] < 1e-3
        assert item["chroma_similarity_true_primary"] == pytest.approx(1.0, abs=1e-3)
        assert item["mel_distance_random_primary"] > 0.05
    assert result["mel_distance"]["difference"]["mean"] < -0.05


# --- input errors ------------------------------------------------------------------------------------------------


def test_a_crop_that_is_not_a_multiple_of_the_length_multiple_is_one_line(model_dir, cache_dir, capsys):
    args = arguments(model_dir, cache_dir)
    args[args.index("--frames") + 1] = "62"
    with pytest.raises(SystemExit) as exit_info:
        bench.cli(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: --frames 62 is not a multiple of 4, the U-Nets' length multiple (2^(levels − 1)); "
                   "pass --frames 60 or 64")


def test_data_of_another_codec_is_refused_naming_the_data(model_dir, cache_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(cache_dir, other)
    info = json.loads((other / "codec.json").read_text())
    (other / "codec.json").write_text(json.dumps({**info, "n_codebooks": 4, "codebook_dim": 4}))
    with pytest.raises(DataError, match=rf"--data {other}: .*differs \(n_codebooks 4 vs 9, codebook_dim 4 vs 8\).*"
                                        rf"discodiff prepare --codec {model_dir / 'codec'}`"):
        bench.main(arguments(model_dir, other))
    (other / "codec.json").write_text(json.dumps({**info, "fingerprint": "0" * 64}))
    with pytest.raises(DataError, match=rf"--data {other}: .*same geometry but other weights"):
        bench.main(arguments(model_dir, other))


@pytest.mark.parametrize("change, error, message", [
    (("--data", "missing"), DataError, r"--data .*missing: no such folder; pass a latent cache made with `discodiff prepare"),
    (("--model", "missing"), ModelDirectoryError, r"--model .*missing: no such folder"),
    (("--frames", "0"), ConfigError, r"--frames 0: must be a positive multiple"),
    (("--frames", "128"), ConfigError, r"--frames 128 is longer than the windows of --data .* \(87 frames\)"),
    (("--limit", "0"), ConfigError, r"--limit 0: must be at least 1"),
    (("--times", "1.0"), ConfigError, r"--times 1: every diffusion time must be in \(0, 1\)"),
])
def test_bad_inputs_are_refused_before_any_work(model_dir, cache_dir, tmp_path, monkeypatch, change, error, message):
    monkeypatch.setattr(DiscoDiffPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded before checking"))
    args = arguments(model_dir, cache_dir)
    flag, value = change
    args[args.index(flag) + 1] = str(tmp_path / value) if value == "missing" else value
    if flag == "--times":
        args = args[: args.index("--times") + 2] + args[args.index("--times") + 1 + len(TIMES):]
    with pytest.raises(error, match=message):
        bench.main(args)
