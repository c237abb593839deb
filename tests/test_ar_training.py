"""The AR training task through the generic trainer, on a latent cache prepared from two rendered chorales with the
tiny codec: every stage trains, validates and exports into one model; the tokenizer is fitted as data statistics;
a crashed run resumes bit-exactly; data of another codec and a model with another tokenizer are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from discodiff.data.dataset import LatentCropDataset

REPO = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
TRAIN_CONFIG = REPO / "configs" / "train" / "ar_tiny.yaml"
TRAIN_SCRIPT, EXPORT_SCRIPT = REPO / "train" / "train.py", REPO / "train" / "export.py"
CRASH_AFTER, CRASH_STATUS = "AR_TEST_CRASH_AFTER", 3  # environment: exit hard once this directory exists

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CrashingLatentCrops(LatentCropDataset):
    """:class:`LatentCropDataset` that exits the process (no cleanup, like kill -9) on the first item read once the
    directory in ``$AR_TEST_CRASH_AFTER`` exists."""

    def __getitem__(self, index: int) -> dict:
        marker = os.environ.get(CRASH_AFTER)
        if marker and Path(marker).is_dir():
            os._exit(CRASH_STATUS)
        return super().__getitem__(index)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    render = pytest.importorskip("discodiff.corpus.render", reason="rendering needs the render extra")
    from discodiff.codec.tiny import build_tiny_codec
    from discodiff.data.prepare import prepare_latent_cache
    from discodiff.data.windows import WindowSettings

    root = tmp_path_factory.mktemp("ar-data")
    render.render_corpus(["bach/bwv66.6", "bach/bwv2.6"], root / "corpus", seconds=5.0, seed=0, progress=False)
    prepare_latent_cache(root / "corpus", root / "cache", build_tiny_codec(seed=0), "tiny", progress=False,
                         windows=WindowSettings(window_seconds=2.0, min_seconds=1.0, quiet_dbfs=-40.0))
    return root / "cache"


@pytest.fixture
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def settings(cache: Path, run_dir: Path, stage: str, *extra: str) -> list[str]:
    return [f"data.data_dir={cache}", "data.crop_frames=96", f"output_dir={run_dir}", f"task.stage={stage}",
            "max_steps=3", "data.batch_size=2", "progress=false", "logging.log_with=none", "validation.every=3",
            "validation.num_items=2", "validation.batch_size=2", "samples.every=3", "samples.num_samples=1",
            "checkpoint.every=3", *extra]


def train(overrides: list[str]):
    from accelerate.state import AcceleratorState, GradientState

    from discodiff.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig.from_yaml(TRAIN_CONFIG, overrides))
    trainer.train()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return trainer


def records(run_dir: Path, key: str) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r[key] for r in map(json.loads, lines) if key in r}


def test_every_stage_trains_and_exports_into_one_model(cache, tmp_path, fresh_accelerate_state):
    from discodiff import load_pipeline
    from discodiff.ar import ARPipeline
    from discodiff.conditioning.semantic import SemanticTokenizer
    from discodiff.errors import OutputError
    from discodiff.training import TrainingState, export_pipeline

    model_dir = tmp_path / "model"
    tokenizers = []
    for stage in ("semantic", "coarse", "fine"):
        run = tmp_path / stage
        trainer = train(settings(cache, run, stage))
        losses, validation = records(run, "train/loss"), records(run, "val/accuracy")
        assert sorted(losses) == [1, 2, 3] and all(np.isfinite(list(losses.values())))
        assert 0.0 <= validation[3] <= 1.0 and np.isfinite(records(run, "val/loss")[3])
        assert losses[1] == pytest.approx(np.log(trainer.task.spec.vocab_size), rel=0.05)  # starts near uniform
        samples = run / "samples" / "step-3"
        assert (samples / "0.wav").is_file() == (stage != "semantic")
        tokenizers.append(SemanticTokenizer.load(run / "semantic_tokenizer.safetensors"))
        export_pipeline(run, model_dir)
        ema = TrainingState.read_ema_parameters(run / "checkpoints" / "checkpoint-3")
        exported = list(ARPipeline.from_pretrained(model_dir).stages[stage].parameters())
        assert len(ema) == len(exported) and all(torch.equal(e, p) for e, p in zip(ema, exported))
    assert all(torch.equal(t.centroids, tokenizers[0].centroids) for t in tokenizers), "one tokenizer per data and seed"
    assert tokenizers[0].k == 16 and "codec-features" in tokenizers[0].description

    pipeline = load_pipeline(model_dir)
    assert pipeline.tokenizer_fitted and torch.equal(pipeline.tokenizer.centroids, tokenizers[0].centroids)
    out = pipeline("a calm chorale", duration=0.3, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.audios.shape == (1, 1, round(0.3 * 44100)) and np.isfinite(out.audios).all()

    other = tmp_path / "other-tokenizer"
    train(settings(cache, other, "fine", "task.tokenizer.seed=5"))
    with pytest.raises(OutputError, match="another semantic tokenizer"):
        export_pipeline(other, model_dir)


def test_a_crashed_run_resumes_bit_exactly(cache, tmp_path):
    """train/train.py on the coarse stage: crash after the step-2 checkpoint, resume; per-step losses, validation
    and final weights equal an uninterrupted run's."""
    from safetensors.torch import load_file

    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}

    def run(run_dir: Path, *args: str, crash: Path | None = None) -> subprocess.CompletedProcess:
        overrides = settings(cache, run_dir, "coarse", "max_steps=4", "checkpoint.every=2", "validation.every=2",
                             "samples.every=0", "data.dataset=test_ar_training:CrashingLatentCrops",
                             "task.text_dropout=0.5", "task.vocal_dropout=0.5")
        return subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--config", str(TRAIN_CONFIG), *overrides, *args],
                              env={**env, **({CRASH_AFTER: str(crash)} if crash else {})}, capture_output=True,
                              text=True, timeout=600)

    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run(whole).returncode == 0
    result = run(split, crash=split / "checkpoints" / "checkpoint-2")
    assert result.returncode == CRASH_STATUS and sorted(records(split, "train/loss")) == [1, 2], result.stderr[-3000:]
    result = run(split, "--resume", "latest")
    assert result.returncode == 0 and "resumed from" in result.stdout + result.stderr, result.stderr[-3000:]
    assert records(split, "train/loss") == records(whole, "train/loss") and len(records(whole, "train/loss")) == 4
    assert records(split, "val/loss") == records(whole, "val/loss") and sorted(records(whole, "val/loss")) == [2, 4]
    final = [load_file(r / "checkpoints" / "checkpoint-4" / "model.safetensors") for r in (whole, split)]
    assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][k], final[1][k]) for k in final[0])


def test_data_of_another_codec_is_refused(cache, tmp_path, fresh_accelerate_state):
    """Codes are the cached latents snapped to the model's codec: a codec of the same geometry but other weights
    would give other codes, so it is refused before training."""
    from discodiff.codec.tiny import build_tiny_codec
    from discodiff.errors import DataError
    from discodiff.training import TrainConfig, Trainer

    other = build_tiny_codec(seed=3).save_pretrained(tmp_path / "other-codec")
    config = TrainConfig.from_yaml(TRAIN_CONFIG, settings(cache, tmp_path / "run", "coarse",
                                                          f"model.overrides=[codec.id={other}]"))
    with pytest.raises(DataError, match="same geometry but other weights"):
        Trainer(config)


def test_a_stage_trains_on_cached_hubert_tokens(cache, tmp_path, fresh_accelerate_state):
    """SSL semantic tokens: `discodiff tokenize` (the tiny HuBERT, k=16) adds them to the cache; the coarse stage of a
    model on the same extractor trains on them (50 Hz tokens read by time against 86.13 Hz codes) with the cache's
    tokenizer, exports, and the exported model tokenizes a vocal itself."""
    from discodiff import load_pipeline
    from discodiff.conditioning.semantic import SemanticTokenizer
    from discodiff.conditioning.ssl import resolve_ssl_features
    from discodiff.data.cache import CacheLayout
    from discodiff.data.tokenize import tokenize_cache
    from discodiff.errors import ConfigError
    from discodiff.training import TrainConfig, Trainer, export_pipeline

    tokenized = tmp_path / "cache"
    import shutil

    shutil.copytree(cache, tokenized)
    tokenize_cache(tokenized, cache.parent / "corpus", resolve_ssl_features("hubert", "tiny"), k=16, progress=False)
    hubert = ["model.overrides=[tokenizer.features=hubert,tokenizer.id=tiny,tokenizer.k=16]"]
    with pytest.raises(ConfigError, match="data.options.semantic_tokens=true"):
        Trainer(TrainConfig.from_yaml(TRAIN_CONFIG, settings(tokenized, tmp_path / "refused", "coarse", *hubert)))
    run = tmp_path / "coarse"
    trainer = train(settings(tokenized, run, "coarse", *hubert, "data.options.semantic_tokens=true"))
    cached = SemanticTokenizer.load(CacheLayout(tokenized).semantic_tokenizer_file)
    assert torch.equal(trainer.task.pipeline.tokenizer.centroids, cached.centroids)
    assert sorted(records(run, "train/loss")) == [1, 2, 3] and (run / "samples" / "step-3" / "0.wav").is_file()
    model = export_pipeline(run, tmp_path / "model")
    pipeline = load_pipeline(model)
    assert pipeline.features_kind == "hubert" and pipeline.semantic_rate == 50.0
    vocal = torch.zeros(1, 1, 22050)
    vocal[..., 2000:] = 0.3 * torch.sin(torch.arange(20050) * 2 * torch.pi * 330 / 44100)
    out = pipeline("a calm chorale", vocal=vocal, generator=torch.Generator().manual_seed(0), progress=False)
    frames = pipeline.codec.frames_for(22050)
    assert out.audios.shape == (1, 1, 22050) and out.semantic.shape[-1] == round(frames * 50 / pipeline.codec.frame_rate)
