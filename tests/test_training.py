"""The Accelerate trainer: configs, checkpoints, real 2-process DDP on CPU, kill -9 and bit-exact resume,
export to a pipeline directory, the step-time benchmark.

Runs use the tiny model on latents of synthetic audio from the tiny codec, served by
:class:`SyntheticLatentCrops` (the batch contract of ``discodiff.training.data``). Subprocess runs import it
as ``test_training:SyntheticLatentCrops`` with this folder on ``PYTHONPATH``; this file is also the script
each DDP rank runs (see ``__main__`` at the bottom).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from discodiff.codec import build_tiny_codec
from discodiff.latents import LatentStats
from discodiff.training.state import STATE_FILE

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
TINY = REPO / "configs" / "train" / "tiny.yaml"
TRAIN_SCRIPT = REPO / "train" / "train.py"
CROP_FRAMES = 32


class SyntheticLatentCrops(Dataset):
    """Random ``CROP_FRAMES`` crops (two per track and epoch) of the latents written by :func:`write_synthetic_data`;
    item randomness is a function of (seed, epoch, index) only, like the real dataset's."""

    def __init__(self, data_dir, crop_frames: int, frame_multiple: int, seed: int):
        data = torch.load(Path(data_dir) / "latents.pt")
        self.latents, self.vocal_latents, self.captions = data["latents"], data["vocal_latents"], data["captions"]
        self.crop_frames, self.seed, self.epoch = crop_frames - crop_frames % frame_multiple, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 2 * len(self.latents)

    def __getitem__(self, index: int) -> dict:
        track = index % len(self.latents)
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        start = int(torch.randint(0, self.latents.shape[-1] - self.crop_frames + 1, (1,), generator=torch.Generator().manual_seed(seed)))
        frames = slice(start, start + self.crop_frames)
        return {"latents": self.latents[track, :, frames], "vocal_latents": self.vocal_latents[track, :, frames],
                "frame_mask": torch.ones(self.crop_frames, dtype=torch.bool), "captions": self.captions[track],
                "track_ids": f"track-{track}"}


def chord(seconds: float, freqs, seed: int, sample_rate: int = 44100) -> torch.Tensor:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return torch.from_numpy((sum(np.sin(2 * np.pi * f * t) for f in freqs) / (2 * len(freqs)) + noise).astype(np.float32))[None]


def write_synthetic_data(data_dir: Path, tracks: int = 6, seconds: float = 1.0) -> Path:
    """``latents.pt`` (accompaniment and vocal latents of the tiny codec, captions) and ``latent_stats.json``."""
    codec = build_tiny_codec(seed=0)
    accompaniment = torch.stack([chord(seconds, (110.0 * (1 + i % 3), 164.8 * (1 + i % 2)), i) for i in range(tracks)])
    vocals = torch.stack([chord(seconds, (440.0 + 20 * i,), 100 + i) for i in range(tracks)])
    latents, vocal_latents = codec.encode(accompaniment, progress=False), codec.encode(vocals, progress=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    captions = [f"a calm chorale, track {i}" for i in range(tracks)]
    torch.save({"latents": latents.clone(), "vocal_latents": vocal_latents.clone(), "captions": captions}, data_dir / "latents.pt")
    LatentStats.fit([latents], codec.codebook_dim).save(data_dir / "latent_stats.json")
    return data_dir


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_synthetic_data(tmp_path_factory.mktemp("latents"))


def overrides(data_dir: Path, run_dir: Path, **extra) -> list[str]:
    """A small, quiet tiny-config run on the synthetic data (``extra``: more ``key=value``, dots as ``__``)."""
    settings = {"data.data_dir": data_dir, "data.dataset": "test_training:SyntheticLatentCrops", "data.collate": "null",
                "data.crop_frames": CROP_FRAMES, "data.batch_size": 2, "output_dir": run_dir, "progress": "false",
                "logging.log_with": "none", "validation.num_items": 2, "validation.batch_size": 2, "validation.every": 0,
                "samples.every": 0, "optimizer.warmup_steps": 2}
    settings.update({key.replace("__", "."): value for key, value in extra.items()})
    return [f"{key}={value}" for key, value in settings.items()]


def subprocess_env() -> dict[str, str]:
    """CPU only, one thread per process (equal reductions in every run), this folder importable, no network."""
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}


def run_training(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--config", str(TINY), *args], env=subprocess_env(),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "train/loss" in r}


def validation_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["val/loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "val/loss" in r}


@pytest.fixture
def fresh_accelerate_state():
    """In-process runs share Accelerate's singletons; reset them after each test that trains in-process."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# --- config -------------------------------------------------------------------------------------


def test_overrides_are_typed_and_relative_paths_resolve():
    from discodiff.training import TrainConfig

    config = TrainConfig.from_yaml(TINY, ["mixed_precision=no", "optimizer.learning_rate=1e-4", "optimizer.betas=[0.9, 0.95]",
                                          "data.validation_dir=null", "max_steps=7", "model.overrides=[primary.dropout=0.1]"])
    assert config.mixed_precision == "no" and config.optimizer.learning_rate == 1e-4 and config.max_steps == 7
    assert config.optimizer.betas == [0.9, 0.95] and config.data.validation_dir is None
    assert config.model.overrides == ["primary.dropout=0.1"]
    assert Path(config.model.config) == REPO / "configs" / "tiny.yaml"


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=1e-3", r"unknown key\(s\) \['optimizer.lr'\] for OptimizerSection; valid: \['betas'"),
    ("trainer.steps=3", r"unknown key\(s\) \['trainer'\]"),
    ("max_steps=many", r"max_steps must be int, got 'many'"),
    ("task.stage=tertiary", r"task.stage must be one of primary, secondary, got 'tertiary'"),
    ("task.objective.vocal_dropout=1.5", r"task.objective.vocal_dropout must be in \[0, 1\], got 1.5"),
    ("task.validation.times=[0.5, 1.0]", r"task.validation.times must be in \(0, 1\), got 1.0"),
    ("task.validation.times=[]", r"task.validation.times must list at least one t"),
    ("task.samples.num_inference_steps=0", r"task.samples.num_inference_steps must be in \[1, 1000\], got 0"),
    ("task.strength=3", r"unknown key\(s\) \['task.strength'\] for DiffusionTaskConfig; valid: \['objective', 'samples'"),
    ("stage=secondary", r"stage is now task.stage .*pass task.stage=secondary"),
    ("samples.text_guidance=2", r"samples.text_guidance is now task.samples.text_guidance"),
    ("optimizer.betas=0.9", r"optimizer.betas must be a list of float \(e.g. \[1, 2\]\), got 0.9"),
    ("optimizer.betas=[0.9]", r"optimizer.betas must be two numbers"),
    ("optimizer.learning_rate=-1e-4", r"optimizer.learning_rate must be in \(0, 1\], got -0.0001"),
    ("data.batch_size=0", r"data.batch_size must be >= 1, got 0"),
    ("seed=-1", r"seed must be in \[0, 4294967295\], got -1"),
    ("max_steps=1e9999", r"max_steps must be int"),
    ("max_steps", r"override 'max_steps' is not key=value"),
])
def test_bad_config_values_name_the_key_and_the_fix(override, message):
    from discodiff.training import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig.from_yaml(TINY, [override])


def test_yaml_booleans_for_text_fields_explain_the_quoting(tmp_path):
    from discodiff.training import TrainConfig

    config = tmp_path / "train.yaml"
    config.write_text(TINY.read_text().replace('mixed_precision: "no"', "mixed_precision: no"))
    with pytest.raises(ValueError, match=r"mixed_precision must be str, got False \(quote it"):
        TrainConfig.from_yaml(config)


def test_configs_of_the_layout_before_the_task_section_still_read(tmp_path):
    """A train_config.yaml of an older run (stage, objective, validation.times, sample guidance at the top level) reads
    into task: and equals the new layout, so such a run can still be resumed and exported."""
    import yaml

    from discodiff.training import TrainConfig

    new = TrainConfig.from_yaml(TINY, ["task.stage=secondary", "task.objective.text_dropout=0.2"])
    old = new.to_dict()
    task = old.pop("task")
    old.update(stage=task["stage"], objective=task["objective"])
    old["validation"]["times"] = task["validation"]["times"]
    old["samples"].update(task["samples"])
    legacy = tmp_path / "train_config.yaml"
    legacy.write_text(yaml.safe_dump(old))
    assert TrainConfig.from_yaml(legacy) == new and new.differences(TrainConfig.from_yaml(legacy)) == []


def test_resume_refuses_task_keys_that_change_what_is_computed_only():
    from discodiff.training import TrainConfig

    saved = TrainConfig.from_yaml(TINY)
    allowed = TrainConfig.from_yaml(TINY, ["task.samples.text_guidance=2.5", "task.validation.times=[0.5]", "samples.every=7"])
    assert saved.differences(allowed) == []
    refused = TrainConfig.from_yaml(TINY, ["task.stage=secondary", "task.objective.loss=l2", "task.objective.vocal_dropout=0"])
    assert [d.split(":")[0] for d in saved.differences(refused)] == ["task.objective.loss", "task.objective.vocal_dropout",
                                                                     "task.stage"]


def test_a_run_moved_to_another_checkout_resumes_and_exports_with_its_own_model_config_copy(tmp_path):
    """train_config.yaml stores model.config as an absolute path; the run keeps a copy of that file, so a run moved
    to another machine (the old path gone) still checks a resume by the model config's content and can be exported."""
    import shutil

    from discodiff.errors import TrainingError
    from discodiff.training import TrainConfig
    from discodiff.training.run import MODEL_CONFIG_COPY, check_resumed_config, saved_run_config, write_run_config

    old_checkout = tmp_path / "old" / "configs"
    shutil.copytree(REPO / "configs", old_checkout)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_run_config(TrainConfig.from_yaml(old_checkout / "train" / "tiny.yaml"), run_dir)
    shutil.rmtree(tmp_path / "old")  # the machine the run started on is gone

    saved = saved_run_config(run_dir)
    assert Path(saved.model.config) == (run_dir / MODEL_CONFIG_COPY).resolve()
    assert (run_dir / MODEL_CONFIG_COPY).read_text() == (REPO / "configs" / "tiny.yaml").read_text()
    check_resumed_config(TrainConfig.from_yaml(TINY), run_dir)  # the same model from this checkout: accepted

    other = tmp_path / "configs"
    shutil.copytree(REPO / "configs", other)
    (other / "tiny.yaml").write_text((other / "tiny.yaml").read_text().replace("layers_per_block: 1", "layers_per_block: 2", 1))
    with pytest.raises(TrainingError, match="model.config"):
        check_resumed_config(TrainConfig.from_yaml(other / "train" / "tiny.yaml"), run_dir)




def test_a_run_from_init_from_resumes_from_a_copy_of_that_model_and_refuses_another(tmp_path):
    """A run started from model.init_from records that directory's files (init_from.json); a resume that names another
    path holding the same files (the run moved, its start model copied along) is accepted, one whose files differ
    (another model, or a weight changed) is refused by key, before anything is written."""
    import shutil

    from discodiff.errors import TrainingError
    from discodiff.training import TrainConfig
    from discodiff.training.run import INIT_FROM_RECORD, check_resumed_config, saved_run_config, write_run_config

    start = tmp_path / "machine-a" / "start-model"
    (start / "unet").mkdir(parents=True)
    (start / "pipeline.json").write_text('{"family": "discodiff"}\n')
    (start / "unet" / "model.safetensors").write_bytes(b"weights-1")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_run_config(TrainConfig.from_yaml(TINY, [f"model.init_from={start}"]), run_dir)
    recorded = json.loads((run_dir / INIT_FROM_RECORD).read_text())
    assert sorted(recorded) == ["pipeline.json", "unet/model.safetensors"] and recorded["unet/model.safetensors"]["bytes"] == 9

    copy = tmp_path / "machine-b" / "start-model"
    shutil.copytree(start, copy)
    shutil.rmtree(tmp_path / "machine-a")
    check_resumed_config(TrainConfig.from_yaml(TINY, [f"model.init_from={copy}"]), run_dir)  # same files: accepted
    assert saved_run_config(run_dir, str(copy)).model.init_from == str(copy)  # what export_pipeline(init_from=) reads
    with pytest.raises(TrainingError, match=r"started from model.init_from=.*machine-a.*not here: pass model.init_from="):
        saved_run_config(run_dir)  # export without the copy: told where the record is
    (copy / "unet" / "model.safetensors").write_bytes(b"weights-2")
    with pytest.raises(TrainingError, match=r"machine-b/start-model holds other files"):
        check_resumed_config(TrainConfig.from_yaml(TINY, [f"model.init_from={copy}"]), run_dir)
def test_training_samples_and_the_pipeline_build_the_same_conditions():
    """StageModel.conditions (the training forward and training samples) equals DiscoDiffPipeline.conditions for the
    same prompt and vocal: one assembly of (text, the stage's vocal tokens)."""
    from conftest import tone
    from discodiff.build import build_pipeline
    from discodiff.conditioning import DacLatentFeatures
    from discodiff.config import DiscoDiffConfig
    from discodiff.training import StageModel

    pipeline = build_pipeline(DiscoDiffConfig.from_yaml(REPO / "configs" / "tiny.yaml"), seed=0)
    vocal = tone(0.3)[None]
    expected = pipeline.conditions(["a calm chorale"], vocal)
    features = DacLatentFeatures(pipeline.codec, pipeline.latent_stats)(vocal, progress=False)
    text = pipeline.text_encoder(["a calm chorale"], device="cpu")
    mask = torch.ones(features.shape[0], features.shape[-1], dtype=torch.bool)
    with torch.no_grad():
        for stage, theirs in zip(("primary", "secondary"), expected):
            ours = StageModel.from_pipeline(pipeline, stage).conditions(text, features, mask)
            assert len(ours.contexts) == len(theirs.contexts) == 2 and torch.equal(ours.pooled, theirs.pooled)
            for a, b in zip(ours.contexts + ours.masks, theirs.contexts + theirs.masks):
                assert (a is None and b is None) or torch.equal(a, b)


# --- checkpoints --------------------------------------------------------------------------------


def test_latest_skips_incomplete_checkpoints_and_they_are_cleaned(tmp_path):
    from discodiff.errors import TrainingError
    from discodiff.training.checkpoint import list_checkpoints, remove_incomplete, resolve_checkpoint

    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-12.tmp", "notes"):
        (tmp_path / name).mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert resolve_checkpoint("latest", tmp_path) == tmp_path / "checkpoint-10"
    assert resolve_checkpoint("latest", tmp_path / "missing") is None
    assert remove_incomplete(tmp_path) == [tmp_path / "checkpoint-12.tmp"] and not (tmp_path / "checkpoint-12.tmp").exists()
    with pytest.raises(TrainingError, match=r"--resume .*checkpoint-12.tmp: not a complete checkpoint .*checkpoint-10"):
        resolve_checkpoint(tmp_path / "checkpoint-12.tmp", tmp_path)


def test_kill_during_training_then_resume_latest_is_bit_exact(data_dir, tmp_path):
    """SIGKILL once a checkpoint exists, leave a half-written checkpoint behind, resume: per-step training and
    validation (EMA) losses and the final weights equal an uninterrupted run's, bit for bit. Dropout in the
    U-Net and gradient accumulation exercise the global RNG and the accumulation counter."""
    from safetensors.torch import load_file

    steps = 12
    settings = dict(max_steps=steps, checkpoint__every=2, checkpoint__keep_last=2, validation__every=3,
                    optimizer__gradient_accumulation_steps=2, model__overrides="[primary.dropout=0.1]")
    reference = tmp_path / "reference"
    run_training(overrides(data_dir, reference, **settings))

    crashed = tmp_path / "crashed"
    command = [sys.executable, str(TRAIN_SCRIPT), "--config", str(TINY), *overrides(data_dir, crashed, **settings)]
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = crashed / "checkpoints" / "checkpoint-4"
    deadline = time.monotonic() + 240
    while not first.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert len(train_losses(crashed)) < steps

    half_written = crashed / "checkpoints" / f"checkpoint-{steps - 1}.tmp"
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"\x00" * 100)
    resumed = run_training([*overrides(data_dir, crashed, **settings), "--resume", "latest"])
    assert "removed incomplete checkpoint" in resumed.stdout + resumed.stderr and not half_written.exists()

    assert train_losses(crashed) == train_losses(reference) and len(train_losses(reference)) == steps
    assert validation_losses(crashed) == validation_losses(reference) and len(validation_losses(reference)) == 4
    final = [load_file(run / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors") for run in (reference, crashed)]
    assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][k], final[1][k]) for k in final[0])
    assert [p.name for p in sorted((crashed / "checkpoints").iterdir())] == [f"checkpoint-{steps - 2}", f"checkpoint-{steps}"]


# --- distributed --------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (the system's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_on_cpu_ends_with_identical_weights(data_dir, tmp_path):
    """``accelerate launch`` of configs/accelerate/cpu_ddp.yaml (``--multi_gpu --num_processes 2``) on CPU (gloo):
    both ranks train, validate and sample, and end with equal weights; the checkpoint keeps each rank's generator."""
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/cpu_ddp.yaml"),
               "--main_process_port", str(free_port()), str(Path(__file__).resolve()),
               *overrides(data_dir, run_dir, max_steps=4, checkpoint__every=4, validation__every=2, samples__every=4,
                          task__samples__num_inference_steps=2)]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((run_dir / f"rank-{i}.json").read_text()) for i in range(2)]
    assert [r["num_processes"] for r in ranks] == [2, 2] and [r["distributed_type"] for r in ranks] == ["MULTI_CPU"] * 2
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["ema"] == ranks[1]["ema"]
    assert ranks[0]["weights"] != ranks[0]["initial_weights"]
    assert sorted(train_losses(run_dir)) == [1, 2, 3, 4] and sorted(validation_losses(run_dir)) == [2, 4]
    assert (run_dir / "samples" / "step-4" / "1.wav").is_file()
    generators = torch.load(run_dir / "checkpoints" / "checkpoint-4" / STATE_FILE, weights_only=False)["generators"]
    assert len(generators) == 2 and not torch.equal(*generators)


def tensor_digest(tensors) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def ddp_rank_main(args: list[str]) -> None:
    """One DDP rank: train the tiny config, then write this rank's weight digests to ``output_dir/rank-<i>.json``."""
    from discodiff.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig.from_yaml(TINY, args))
    initial = tensor_digest(trainer.model.parameters())
    run_dir = trainer.train()
    accelerator = trainer.accelerator
    report = {"num_processes": accelerator.num_processes, "distributed_type": accelerator.distributed_type.value,
              "initial_weights": initial, "weights": tensor_digest(accelerator.unwrap_model(trainer.model).parameters()),
              "ema": tensor_digest(trainer.state.ema.shadow_params)}
    (run_dir / f"rank-{accelerator.process_index}.json").write_text(json.dumps(report))


# --- the real data path --------------------------------------------------------------------------


def test_trains_on_a_prepared_cache_with_the_default_dataset(tmp_path, fresh_accelerate_state):
    """Render two chorales, prepare a latent cache with the tiny codec and cached text, train with the default
    ``LatentCropDataset``: padded tail windows, cached text embeddings, validation and samples."""
    render = pytest.importorskip("discodiff.corpus.render", reason="rendering needs the render extra")
    from discodiff.conditioning import build_tiny_t5_conditioner
    from discodiff.data.prepare import prepare_latent_cache
    from discodiff.data.text_cache import cache_text_embeddings
    from discodiff.data.windows import WindowSettings
    from discodiff.training import TrainConfig, Trainer

    corpus, cache = tmp_path / "corpus", tmp_path / "cache"
    render.render_corpus(["bach/bwv66.6", "bach/bwv2.6"], corpus, seconds=5.0, seed=0, progress=False)
    prepare_latent_cache(corpus, cache, build_tiny_codec(seed=0), "tiny", progress=False,
                         windows=WindowSettings(window_seconds=2.0, min_seconds=1.0, quiet_dbfs=-40.0))
    cache_text_embeddings(cache, build_tiny_t5_conditioner(seed=0, max_length=64), progress=False)  # configs/tiny.yaml's
    run_dir = tmp_path / "run"
    config = TrainConfig.from_yaml(TINY, [f"data.data_dir={cache}", "data.options.text_cache=true", "data.crop_frames=160",
                                          f"output_dir={run_dir}", "max_steps=2", "data.batch_size=2", "progress=false",
                                          "logging.log_with=none", "validation.every=2", "validation.num_items=2",
                                          "samples.every=2", "samples.num_samples=2", "task.samples.num_inference_steps=2"])
    trainer = Trainer(config)
    assert "text_sequence" in trainer.data.collate_fn([trainer.data.train[0]])
    trainer.train()
    assert sorted(train_losses(run_dir)) == [1, 2] and sorted(validation_losses(run_dir)) == [2]
    captions = json.loads((run_dir / "samples" / "step-2" / "captions.json").read_text())
    assert len(captions) == 2 and all(captions)
    # latents of another codec of the same geometry are not this model's: refused before training, as the AR task does
    from discodiff.errors import DataError

    other = build_tiny_codec(seed=3).save_pretrained(tmp_path / "other-codec")
    other_config = TrainConfig.from_yaml(TINY, [f"data.data_dir={cache}", f"output_dir={tmp_path / 'other-run'}",
                                                f"model.overrides=[codec.id={other}]", "progress=false",
                                                "logging.log_with=none", "data.crop_frames=160"])
    with pytest.raises(DataError, match="same geometry but other weights"):
        Trainer(other_config)


# --- export -------------------------------------------------------------------------------------


def test_export_writes_ema_weights_that_load_and_sample(data_dir, tmp_path, fresh_accelerate_state):
    """Train the primary in-process (samples, TensorBoard), export, load with from_pretrained, sample; then export
    a secondary run into the same directory: only the secondary changes."""
    from accelerate.state import AcceleratorState, GradientState

    from discodiff.pipeline import DiscoDiffPipeline
    from discodiff.training import TrainConfig, Trainer, TrainingState, export_pipeline
    from discodiff.training.data import load_latent_stats

    def train(stage: str, run_dir: Path, **extra) -> Trainer:
        config = TrainConfig.from_yaml(TINY, overrides(data_dir, run_dir, task__stage=stage, max_steps=3, checkpoint__every=3,
                                                       **extra))
        trainer = Trainer(config)
        trainer.train()
        return trainer

    primary_run = tmp_path / "primary"
    trainer = train("primary", primary_run, samples__every=3, task__samples__num_inference_steps=2,
                    task__samples__text_guidance=2.0, task__samples__vocal_guidance=1.5, logging__log_with="tensorboard")
    for name in ("0.wav", "0.png", "1.wav", "1.png", "captions.json"):
        assert (primary_run / "samples" / "step-3" / name).is_file() and (primary_run / "samples" / "reference" / name).is_file()
    assert list((primary_run / "logs").rglob("events.out.tfevents.*"))

    model_dir = export_pipeline(primary_run, tmp_path / "model")
    pipeline = DiscoDiffPipeline.from_pretrained(model_dir)
    ema = TrainingState.read_ema_parameters(primary_run / "checkpoints" / "checkpoint-3")
    exported = list(pipeline.primary.parameters()) + list(pipeline.primary_vocal_encoder.parameters())
    assert len(exported) == len(ema) and all(torch.equal(e, p) for e, p in zip(ema, exported))
    raw = list(trainer.accelerator.unwrap_model(trainer.model).parameters())
    assert any(not torch.equal(e, r.cpu()) for e, r in zip(ema, raw)), "EMA weights should differ from the raw weights"
    assert torch.equal(pipeline.latent_stats.mean, load_latent_stats(data_dir).mean)
    out = pipeline(["a calm chorale"], duration=0.3, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                   progress=False)
    assert out.audios.shape[:2] == (1, 1) and np.isfinite(out.audios).all()

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    primary_before = {k: v.clone() for k, v in pipeline.primary.state_dict().items()}
    secondary_run = tmp_path / "secondary"
    train("secondary", secondary_run)
    export_pipeline(secondary_run / "checkpoints" / "checkpoint-3", model_dir)
    both = DiscoDiffPipeline.from_pretrained(model_dir)
    assert all(torch.equal(v, both.primary.state_dict()[k]) for k, v in primary_before.items())
    ema = TrainingState.read_ema_parameters(secondary_run / "checkpoints" / "checkpoint-3")
    assert all(torch.equal(e, p) for e, p in zip(ema, both.secondary.parameters()))


def test_export_refuses_a_pipeline_with_other_latent_statistics(data_dir, tmp_path, fresh_accelerate_state):
    from discodiff.errors import OutputError
    from discodiff.training import TrainConfig, Trainer, export_pipeline

    run_dir = tmp_path / "run"
    Trainer(TrainConfig.from_yaml(TINY, overrides(data_dir, run_dir, max_steps=1))).train()
    model_dir = export_pipeline(run_dir, tmp_path / "model")
    LatentStats.fit([torch.randn(2, 72, 40) * 3], codebook_dim=8).save(model_dir / "latent_stats.json")
    with pytest.raises(OutputError, match="other latent statistics than this run's data"):
        export_pipeline(run_dir, model_dir)



def test_max_minutes_stops_with_a_checkpoint_that_resumes(data_dir, tmp_path, fresh_accelerate_state, capsys):
    """With max_minutes spent, the run stops after the step it is on, saves that step's checkpoint (between the
    checkpoint.every ones) and says how to go on; --resume latest then runs to max_steps."""
    from discodiff.training import TrainConfig, Trainer

    run_dir = tmp_path / "run"
    settings = dict(max_steps=4, checkpoint__every=100, max_minutes=1e-9)
    Trainer(TrainConfig.from_yaml(TINY, overrides(data_dir, run_dir, **settings))).train()
    assert sorted(train_losses(run_dir)) == [1]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["checkpoint-1"]
    assert "stopping at step 1 of 4: max_minutes=1e-09 reached; go on with --resume latest" in capsys.readouterr().out
    settings["max_minutes"] = "null"
    Trainer(TrainConfig.from_yaml(TINY, overrides(data_dir, run_dir, **settings))).train(resume="latest")
    assert sorted(train_losses(run_dir)) == [1, 2, 3, 4]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-4"]
    assert "cosine decay" not in capsys.readouterr().out  # same max_steps: the schedule is unchanged, nothing to say


def test_a_flat_model_trains_as_one_stage_and_exports(data_dir, tmp_path, fresh_accelerate_state):
    """primary_codebooks = K: the primary stage learns all 72 channels; there is no secondary stage to train, and the
    flat run cannot be exported into a two-stage model."""
    from discodiff.errors import OutputError, TrainingError
    from discodiff.pipeline import DiscoDiffPipeline
    from discodiff.training import TrainConfig, Trainer, export_pipeline

    flat = {"model__overrides": "[primary_codebooks=9]"}
    run_dir = tmp_path / "flat"
    trainer = Trainer(TrainConfig.from_yaml(TINY, overrides(data_dir, run_dir, max_steps=2, **flat)))
    assert trainer.task.stage_model.unet.config.out_channels == 72
    trainer.train()
    losses = train_losses(run_dir)
    assert sorted(losses) == [1, 2] and all(np.isfinite(list(losses.values())))
    pipeline = DiscoDiffPipeline.from_pretrained(export_pipeline(run_dir, tmp_path / "flat-model"))
    assert pipeline.is_flat
    out = pipeline(["a calm chorale"], duration=0.3, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                   progress=False)
    assert out.latents.shape[1] == 72 and np.isfinite(out.audios).all()
    with pytest.raises(TrainingError, match="task.stage=secondary: this model is flat"):
        Trainer(TrainConfig.from_yaml(TINY, overrides(data_dir, tmp_path / "secondary", max_steps=1,
                                                      task__stage="secondary", **flat)))
    two_stage_run = tmp_path / "two-stage"
    Trainer(TrainConfig.from_yaml(TINY, overrides(data_dir, two_stage_run, max_steps=1))).train()
    two_stage = export_pipeline(two_stage_run, tmp_path / "two-stage-model")
    with pytest.raises(OutputError, match="another primary_codebooks"):
        export_pipeline(run_dir, two_stage)

# --- benchmark ----------------------------------------------------------------------------------


def test_train_step_benchmark_prints_the_breakdown(capsys, fresh_accelerate_state):
    from discodiff.bench.train_step import main

    main(["--steps", "2", "--warmup", "1", "--batch-size", "2", "--frames", "32"])
    printed = capsys.readouterr().out
    for phase in ("data loading", "conditioning", "forward+backward", "optimizer", "total"):
        assert phase in printed


def test_train_step_benchmark_without_weights_says_so_in_one_line(capsys, monkeypatch):
    from discodiff.bench.train_step import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(REPO / "configs" / "base.yaml")])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "weights" in message


if __name__ == "__main__":
    ddp_rank_main(sys.argv[1:])
