"""The trainer's guards: bad inputs fail in one line before anything is built or written, earlier work is never lost.

``train/train.py`` and ``train/export.py`` run as subprocesses, as a user runs them: a refused command exits 1
with a single ``error:`` line naming the input, no traceback, and leaves every file of earlier work
byte-identical. Runs use the tiny model on the synthetic latents of ``test_training`` (a few steps) or on
a small latent cache prepared from synthetic stems with the tiny codec. CPU only, no network.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from conftest import tone
from discodiff.latents import LatentStats
from test_training import TINY, TRAIN_SCRIPT, overrides, subprocess_env, write_synthetic_data

REPO = Path(__file__).resolve().parents[1]
EXPORT_SCRIPT = REPO / "train" / "export.py"
QUIET = ["progress=false", "logging.log_with=none", "validation.num_items=2", "validation.batch_size=2",
         "validation.every=0", "samples.every=0", "data.batch_size=2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread


@pytest.fixture
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_synthetic_data(tmp_path_factory.mktemp("latents"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A finished latent cache of three 2.5 s synthetic tracks in 1 s windows (87 frames) with the tiny codec."""
    from discodiff.codec import build_tiny_codec
    from discodiff.data.prepare import prepare_latent_cache
    from discodiff.data.windows import WindowSettings

    root = tmp_path_factory.mktemp("stems")
    for i in range(3):
        folder = root / f"track-{i}"
        folder.mkdir()
        sf.write(folder / "vocals.wav", tone(2.5, freqs=(440.0 + 20 * i,), seed=i)[0].numpy(), 44100, subtype="FLOAT")
        sf.write(folder / "accompaniment.wav", tone(2.5, seed=10 + i)[0].numpy(), 44100, subtype="FLOAT")
    out = tmp_path_factory.mktemp("cache") / "cache"
    prepare_latent_cache(root, out, build_tiny_codec(seed=0), "tiny", progress=False,
                         windows=WindowSettings(window_seconds=1.0, min_seconds=0.5, quiet_dbfs=-60.0))
    return out


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory) -> Path:
    """A finished 4-step run: checkpoints 2 and 4, metrics of steps 1…4."""
    run_dir = tmp_path_factory.mktemp("runs") / "finished"
    result = train(overrides(data_dir, run_dir, max_steps=4, checkpoint__every=2, checkpoint__keep_last=2))
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_names(run_dir) == ["checkpoint-2", "checkpoint-4"]
    return run_dir


def run(script: Path, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def train(args: list[str]) -> subprocess.CompletedProcess:
    return run(TRAIN_SCRIPT, ["--config", str(TINY), *args])


def assert_refused(result: subprocess.CompletedProcess, *names: str) -> str:
    """Exit status 1, one ``error:`` line on stderr naming every one of ``names``, no traceback; returns the line."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (relative path → SHA-256)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def checkpoint_names(run_dir: Path) -> list[str]:
    from discodiff.training.checkpoint import list_checkpoints

    return [p.name for p in list_checkpoints(run_dir / "checkpoints")]


def metric_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


# --- 1. inputs are checked first, and fail in one line ---------------------------------------------


def test_unusable_data_fails_in_one_line_before_anything_is_written(cache, tmp_path):
    """Unset, missing and unprepared data dirs, a cache of another codec geometry, fp16 on the CPU and a codec
    that is neither local nor reachable: exit 1, one line naming the input and the fix; output_dir never created."""
    other_codec = tmp_path / "other-codec"
    shutil.copytree(cache, other_codec)
    info = json.loads((other_codec / "codec.json").read_text())
    (other_codec / "codec.json").write_text(json.dumps({**info, "n_codebooks": 4}))
    unprepared = tmp_path / "stems-only"
    unprepared.mkdir()
    run_dir = tmp_path / "run"
    cases = [
        (["data.data_dir=null"], ("data.data_dir", "discodiff prepare")),
        ([f"data.data_dir={tmp_path / 'missing'}"], ("data.data_dir=", "missing", "no such directory")),
        ([f"data.data_dir={unprepared}"], (f"data.data_dir={unprepared}", "discodiff prepare")),
        ([f"data.data_dir={other_codec}"], (f"data.data_dir={other_codec}", "n_codebooks 4 vs 9", "codec.id=tiny")),
        ([f"data.data_dir={cache}", "mixed_precision=fp16"], ("fp16 needs a CUDA GPU", "bf16")),
        ([f"data.data_dir={cache}", "model.overrides=[codec.id=nobody/no-such-codec]"],
         ("nobody/no-such-codec", "model.overrides=[codec.id=path/to/dir]")),
    ]
    for args, names in cases:
        assert_refused(train([*args, f"output_dir={run_dir}", "data.crop_frames=64", "max_steps=1", *QUIET]), *names)
        assert not run_dir.exists(), args


def test_statistics_fitted_per_something_else_are_refused_before_anything_is_built(tmp_path):
    """Latent statistics fitted per channel for a model that normalises per codebook: one line naming both and the fix."""
    from discodiff.errors import DataError
    from discodiff.training import TrainConfig, check_run

    data = write_synthetic_data(tmp_path / "data", tracks=3)
    latents = torch.load(data / "latents.pt")["latents"]
    LatentStats.fit([latents], 8, per="channel").save(data / "latent_stats.json")
    run_dir = tmp_path / "run"
    config = TrainConfig.from_yaml(TINY, overrides(data, run_dir, max_steps=1))
    with pytest.raises(DataError, match=r"fitted per channel, but the model config has normalize_per=codebook.*--normalize-per codebook"):
        check_run(config)
    assert_refused(train(overrides(data, run_dir, max_steps=1)), "normalize_per=codebook", "latent_stats.json")
    assert not run_dir.exists()


def test_a_text_cache_of_another_text_encoder_is_refused(cache, tmp_path, fresh_accelerate_state):
    """data.options.text_cache=true with embeddings of another encoder than the model's (here another max_length)
    is refused when the model is built, before anything is written; the model's own encoder's cache trains."""
    from discodiff.conditioning import build_tiny_t5_conditioner
    from discodiff.data.text_cache import cache_text_embeddings
    from discodiff.errors import DataError
    from discodiff.training import TrainConfig, Trainer

    other = tmp_path / "cache"
    shutil.copytree(cache, other)
    cache_text_embeddings(other, build_tiny_t5_conditioner(seed=0, max_length=32), progress=False)
    run_dir = tmp_path / "run"
    args = [f"data.data_dir={other}", "data.options.text_cache=true", "data.crop_frames=64", f"output_dir={run_dir}",
            "max_steps=1", *QUIET]
    with pytest.raises(DataError, match=r"text cache .* another text encoder than the model's \(max_length 32 vs 64"):
        Trainer(TrainConfig.from_yaml(TINY, args))
    assert not run_dir.exists()


def test_bad_resume_path_is_refused_before_the_run_is_touched(finished_run, data_dir, tmp_path):
    before = snapshot(finished_run)
    for resume in (tmp_path / "nowhere" / "checkpoint-3", finished_run / "checkpoints" / "checkpoint-3"):
        result = train([*overrides(data_dir, finished_run, max_steps=6), "--resume", str(resume)])
        assert_refused(result, f"--resume {resume}", "--resume latest", "checkpoint-4")
    assert snapshot(finished_run) == before


def test_missing_codec_names_the_model_config_key_not_a_cli_flag():
    from discodiff.errors import ConfigError
    from discodiff.training import TrainConfig
    from discodiff.training.diffusion_task import load_pipeline

    config = TrainConfig.from_yaml(TINY, ["model.overrides=[text_encoder.id=nobody/no-such-t5]"])
    with pytest.raises(ConfigError, match=r"text_encoder.id 'nobody/no-such-t5'.*model.overrides=\[text_encoder.id=path/to/dir\]") as info:
        load_pipeline(config.model, seed=0)
    assert "--text-encoder" not in str(info.value) and "--codec" not in str(info.value)


# --- 2. earlier work is protected ---------------------------------------------------------------


@pytest.mark.parametrize("extra, names", [
    ([], ("already holds a training run", "--resume latest", "--overwrite")),
    (["--resume", "{run}/checkpoints/checkpoint-2"], ("newer checkpoints", "checkpoint-4", "--overwrite")),
    (["--resume", "latest", "optimizer.learning_rate=0.5"], ("optimizer.learning_rate", "train_config.yaml")),
], ids=["new-run-into-a-run", "older-checkpoint", "changed-config"])
def test_a_finished_run_survives_a_refused_second_run(finished_run, data_dir, extra, names):
    before = snapshot(finished_run)
    extra = [arg.replace("{run}", str(finished_run)) for arg in extra]
    assert_refused(train([*overrides(data_dir, finished_run, max_steps=8, checkpoint__every=2, checkpoint__keep_last=2),
                          *extra]), *names)
    assert snapshot(finished_run) == before


def test_a_folder_that_is_not_a_run_is_refused(data_dir, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    for extra in ([], ["--resume", "latest"], ["--overwrite"]):
        assert_refused(train([*overrides(data_dir, folder, max_steps=1), *extra]), str(folder), "non-empty folder")
    assert snapshot(folder) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}


def test_overwrite_starts_over_and_keep_last_keeps_the_new_run(finished_run, data_dir, tmp_path):
    """Before run ids, the old checkpoint-4 counted as newer than the new run's checkpoint-2 and keep_last deleted the
    new run's checkpoints; now --overwrite clears the old run explicitly and the new run keeps its own."""
    from discodiff.training.checkpoint import checkpoint_run_id

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    old_id = checkpoint_run_id(run_dir / "checkpoints" / "checkpoint-4")
    result = train([*overrides(data_dir, run_dir, max_steps=3, checkpoint__every=1, checkpoint__keep_last=2), "--overwrite"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_names(run_dir) == ["checkpoint-2", "checkpoint-3"] and metric_steps(run_dir) == [1, 2, 3]
    ids = {checkpoint_run_id(run_dir / "checkpoints" / name) for name in checkpoint_names(run_dir)}
    assert len(ids) == 1 and old_id not in ids and None not in ids


def test_keep_last_deletes_only_the_current_runs_own_older_checkpoints(tmp_path):
    from discodiff.training.checkpoint import RUN_ID_FILE, prune_checkpoints

    for step, run_id in ((1, "ours"), (2, "ours"), (3, "ours"), (4, "theirs"), (5, None), (9, "ours")):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if run_id:
            (tmp_path / f"checkpoint-{step}" / RUN_ID_FILE).write_text(run_id)
    deleted = prune_checkpoints(tmp_path, "ours", step=3, keep_last=2)
    assert [p.name for p in deleted] == ["checkpoint-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint-{s}" for s in (2, 3, 4, 5, 9)]


def test_resume_continues_and_keeps_the_run_id(finished_run, data_dir, tmp_path):
    from discodiff.training.checkpoint import checkpoint_run_id

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    run_id = checkpoint_run_id(run_dir / "checkpoints" / "checkpoint-4")
    result = train([*overrides(data_dir, run_dir, max_steps=6, checkpoint__every=2, checkpoint__keep_last=2), "--resume", "latest"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_names(run_dir) == ["checkpoint-4", "checkpoint-6"] and metric_steps(run_dir) == [1, 2, 3, 4, 5, 6]
    assert checkpoint_run_id(run_dir / "checkpoints" / "checkpoint-6") == run_id
    assert "max_steps: 6" in (run_dir / "train_config.yaml").read_text()
    assert "max_steps 4 → 6: the learning rate's cosine decay now ends at step 6" in result.stdout


def test_resume_on_another_machine_takes_the_moved_data_and_run_folders(finished_run, data_dir, tmp_path):
    """A run and its data copied elsewhere (another machine) resume from the new paths; the data are checked to be
    the same (latent statistics), so the path itself may change."""
    run_dir, moved_data = tmp_path / "moved-run", tmp_path / "moved-data"
    shutil.copytree(finished_run, run_dir)
    shutil.copytree(data_dir, moved_data)
    result = train([*overrides(moved_data, run_dir, max_steps=6, checkpoint__every=2), "--resume", "latest"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert metric_steps(run_dir) == [1, 2, 3, 4, 5, 6]


# --- 3. numbers ---------------------------------------------------------------------------------


def test_crop_frames_beyond_the_cache_windows_names_the_largest_valid_value(cache, tmp_path):
    from discodiff.errors import ConfigError
    from discodiff.training import TrainConfig, check_run

    run_dir = tmp_path / "run"
    assert_refused(train([f"data.data_dir={cache}", "data.crop_frames=100000", f"output_dir={run_dir}", *QUIET]),
                   "data.crop_frames=100000", "at most 87")
    assert not run_dir.exists()
    config = TrainConfig.from_yaml(TINY, [f"data.data_dir={cache}", "data.crop_frames=87", f"output_dir={run_dir}"])
    check_run(config)  # the window length itself is fine
    config.data.crop_frames = 88
    with pytest.raises(ConfigError, match="at most 87"):
        check_run(config)


@pytest.mark.parametrize("override, message", [
    ("output_dir=", "output_dir is empty"),
    ("checkpoint.keep_last=0", r"checkpoint.keep_last must be >= 1"),
    ("data.crop_frames=0", r"data.crop_frames must be >= 1"),
])
def test_config_ranges(override, message):
    from discodiff.errors import ConfigError
    from discodiff.training import TrainConfig

    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_yaml(TINY, [override])


# --- 4. precision -------------------------------------------------------------------------------


def test_fp16_on_cpu_is_refused_and_bf16_really_autocasts(data_dir, tmp_path, fresh_accelerate_state):
    from accelerate.state import AcceleratorState, GradientState

    from discodiff.errors import ConfigError
    from discodiff.training import TrainConfig, Trainer

    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU.*use mixed_precision=bf16 or mixed_precision=no on CPU"):
        Trainer(TrainConfig.from_yaml(TINY, overrides(data_dir, tmp_path / "fp16", mixed_precision="fp16")))
    assert not (tmp_path / "fp16").exists()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()

    trainer = Trainer(TrainConfig.from_yaml(TINY, overrides(data_dir, tmp_path / "bf16", mixed_precision="bf16")))
    dtypes = []
    unet = trainer.accelerator.unwrap_model(trainer.model).unet
    linear = next(m for m in unet.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    batch = trainer.task.prepare(next(iter(trainer.train_loader)), trainer.accelerator.device)
    trainer.task.loss(trainer.model, batch, torch.Generator().manual_seed(0))
    handle.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}


# --- 5. export ----------------------------------------------------------------------------------


def test_export_refuses_a_folder_that_is_not_a_model(finished_run, tmp_path):
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "song.wav").write_bytes(b"not yours")
    assert_refused(run(EXPORT_SCRIPT, [str(finished_run), str(folder)]), str(folder), "pipeline.json")
    assert snapshot(folder) == {"song.wav": hashlib.sha256(b"not yours").hexdigest()}
    assert_refused(run(EXPORT_SCRIPT, [str(tmp_path / "no-run"), str(tmp_path / "model")]), "no-run")
    assert not (tmp_path / "model").exists()


def test_export_into_a_model_is_atomic_and_replaces_only_the_trained_stage(finished_run, tmp_path, monkeypatch):
    """A disk that fills up while the new weights are written leaves the earlier model byte-identical; a successful
    export into it changes the primary's weights only and keeps files the pipeline does not write."""
    from discodiff.models import UNet1DConditionModel
    from discodiff.training import export_pipeline

    model = export_pipeline(finished_run, tmp_path / "model")
    (model / "README.md").write_text("my notes")
    before = snapshot(model)

    def disk_full(self, directory, *args, **kwargs):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 10)
        raise OSError(28, "No space left on device", str(directory))

    with monkeypatch.context() as patch:
        patch.setattr(UNet1DConditionModel, "save_pretrained", disk_full)
        with pytest.raises(OSError, match="No space left"):
            export_pipeline(finished_run, model)
    assert snapshot(model) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no temporary folder is left behind"

    export_pipeline(finished_run / "checkpoints" / "checkpoint-2", model)
    after = snapshot(model)
    weights = {key for key in before if key.endswith(".safetensors")}
    changed = {key for key in weights if after.get(key) != before[key]}
    assert changed == {"primary/diffusion_pytorch_model.safetensors", "primary_vocal_encoder/diffusion_pytorch_model.safetensors"}
    assert after["README.md"] == before["README.md"]
