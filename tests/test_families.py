"""Model families: a second family (tests/toy_family.py, registered nowhere but in its own configs) trains, resumes,
exports, loads and samples through the same loop, loader and CLI as the diffusion family, with no edit of them;
and diffusion model directories written before families existed still load and sample the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from test_training import REPO, TRAIN_SCRIPT, subprocess_env, train_losses, validation_losses
from toy_family import CRASH_AFTER_STEP, CRASH_STATUS, ToyPipeline, write_toy_configs, write_toy_data

runner = CliRunner()


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model config, training config, data dir) of the toy family."""
    root = tmp_path_factory.mktemp("toy")
    data_dir = write_toy_data(root / "data")
    model, train = write_toy_configs(root / "configs", data_dir)
    return model, train, data_dir


def train_toy(train_config: Path, run_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--config", str(train_config), f"output_dir={run_dir}", *args],
                          env={**subprocess_env(), **(env or {})}, capture_output=True, text=True, timeout=300)


def test_toy_family_trains_resumes_exports_loads_and_samples(toy, tmp_path):
    """Through train/train.py: a run that crashes after its step-2 checkpoint and is continued with --resume latest
    equals an uninterrupted one (losses, validation, weights); the export loads through discodiff.load_pipeline and
    samples through `discodiff sample`."""
    import discodiff
    from discodiff.cli import app
    from discodiff.training import TrainingState, export_pipeline

    _, train_config, _ = toy
    whole, split = tmp_path / "whole", tmp_path / "split"
    result = train_toy(train_config, whole)
    assert result.returncode == 0, result.stderr[-3000:]
    result = train_toy(train_config, split, env={CRASH_AFTER_STEP: "2"})
    assert result.returncode == CRASH_STATUS and sorted(train_losses(split)) == [1, 2], result.stderr[-3000:]
    result = train_toy(train_config, split, "task.sample_seconds=0.08", "--resume", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr

    assert train_losses(split) == train_losses(whole) and sorted(train_losses(whole)) == [1, 2, 3, 4]
    assert validation_losses(split) == validation_losses(whole) and sorted(validation_losses(whole)) == [2, 4]
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert not any(key.startswith("train/loss_t") for record in records for key in record), "no t, no t buckets"
    final = [load_file(run / "checkpoints" / "checkpoint-4" / "model.safetensors") for run in (whole, split)]
    assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][k], final[1][k]) for k in final[0])
    for name in ("0.wav", "1.png", "captions.json"):
        assert (whole / "samples" / "step-4" / name).is_file() and (whole / "samples" / "reference" / name).is_file()
    assert sf.info(str(split / "samples" / "step-4" / "0.wav")).frames == 640  # the resumed run's sample_seconds

    model_dir = export_pipeline(whole, tmp_path / "model")
    assert json.loads((model_dir / "pipeline.json").read_text())["family"] == "toy_family:FAMILY"
    pipeline = discodiff.load_pipeline(model_dir)
    assert isinstance(pipeline, ToyPipeline)
    ema = TrainingState.read_ema_parameters(whole / "checkpoints" / "checkpoint-4")
    assert all(torch.equal(e, p) for e, p in zip(ema, pipeline.model.parameters(), strict=True))

    out = tmp_path / "a.wav"
    result = runner.invoke(app, ["sample", "--model", str(model_dir), "--prompt", "x", "--out", str(out)])
    assert result.exit_code == 0, result.output
    audio, rate = sf.read(out)
    assert rate == 8000 and audio.shape == (800,)  # the toy model's default 0.1 s

    result = runner.invoke(app, ["sample", "--model", str(model_dir), "--prompt", "x", "--out", str(tmp_path / "b.wav"),
                                 "--steps", "3"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "--steps" in errors[0] and "'toy' family" in errors[0], result.output
    assert not (tmp_path / "b.wav").exists()


def test_new_model_builds_a_toy_model_directory(toy, tmp_path):
    import discodiff
    from discodiff.cli import app

    model_config, _, _ = toy
    result = runner.invoke(app, ["new-model", str(tmp_path / "fresh"), "--config", str(model_config)])
    assert result.exit_code == 0, result.output
    pipeline = discodiff.load_pipeline(tmp_path / "fresh")
    assert isinstance(pipeline, ToyPipeline) and pipeline.sample_rate == 8000
    out = pipeline("a tone", duration=0.05, generator=torch.Generator().manual_seed(0))
    assert out.audios.shape == (1, 1, 400)


def test_toy_task_section_is_typed_by_the_toy_task(toy):
    from discodiff.training import TrainConfig

    _, train_config, _ = toy
    config = TrainConfig.from_yaml(train_config, ["task.loss=l1"])
    assert type(config.task).__name__ == "ToyTaskConfig" and config.task.loss == "l1"
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['task.stage'\] for ToyTaskConfig"):
        TrainConfig.from_yaml(train_config, ["task.stage=secondary"])
    with pytest.raises(ValueError, match=r"task.loss must be one of mse, l1, got 'l2'"):
        TrainConfig.from_yaml(train_config, ["task.loss=l2"])
    resumed = TrainConfig.from_yaml(train_config, ["task.sample_seconds=0.2", "task.loss=l1"])
    assert config.differences(resumed) == []  # task.sample_seconds is one of the toy task's resumable keys
    assert TrainConfig.from_yaml(train_config).differences(resumed) == ["task.loss: 'mse' → 'l1'"]


@pytest.mark.filterwarnings("ignore:latent statistics are not fitted")
def test_a_diffusion_model_directory_without_family_loads_and_samples_the_same(tmp_path):
    """Directories saved before families existed have no "family" in pipeline.json: they load as the diffusion family."""
    import discodiff
    from conftest import tone
    from discodiff.build import build_pipeline
    from discodiff.config import DiscoDiffConfig

    model_dir = build_pipeline(DiscoDiffConfig.from_yaml(REPO / "configs" / "tiny.yaml"), seed=0).save_pretrained(tmp_path / "m")

    def sampled() -> torch.Tensor:
        pipeline = discodiff.load_pipeline(model_dir)
        return pipeline(["a calm chorale"], vocal=tone(0.3)[None], num_inference_steps=2, text_guidance=2.0,
                        vocal_guidance=1.5, generator=torch.Generator().manual_seed(0), output_type="latent",
                        progress=False).latents

    before = sampled()
    manifest = json.loads((model_dir / "pipeline.json").read_text())
    assert manifest.pop("family") == "discodiff"
    (model_dir / "pipeline.json").write_text(json.dumps(manifest))
    assert torch.equal(sampled(), before)
