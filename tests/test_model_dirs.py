"""Damaged model directories, atomic saving, sampling argument checks and prompt truncation, on the tiny model.

Each damaged directory must fail with one domain error whose one-line message names the damaged file or
folder; a failed save must leave the earlier directory as it was; a bad sampling argument must fail before
any model runs.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

from discodiff.build import build_pipeline
from discodiff.codec import DacCodec
from discodiff.codec.dac_codec import MIN_CHUNK_SECONDS
from discodiff.conditioning import build_tiny_t5_conditioner
from discodiff.conditioning.text import PromptTruncatedWarning
from discodiff.config import MAX_INFERENCE_STEPS, DiscoDiffConfig
from discodiff.diffusion import make_scheduler, sample
from discodiff.errors import CodecError, ConditioningError, GenerationError, ModelDirectoryError
from discodiff.outputs import TEMPORARY_MARK
from discodiff.pipeline import DiscoDiffPipeline
from conftest import tone

VOCAL_ENCODERS = ("primary_vocal_encoder", "secondary_vocal_encoder")
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(DiscoDiffConfig.from_yaml("configs/tiny.yaml"), seed=0)


@pytest.fixture(scope="module")
def model_dir(pipeline, tmp_path_factory):
    return pipeline.save_pretrained(tmp_path_factory.mktemp("saved") / "model")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if TEMPORARY_MARK in p.name or ".old-" in p.name]


# --- damage ----------------------------------------------------------------------------------------------


def invalid_json(path: Path) -> None:
    path.write_text('{"_class_name": "UNet1DConditionModel", "in_channels": 8,')  # cut mid-write


def not_an_object(path: Path) -> None:
    path.write_text("[1, 2, 3]")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def edit_json(**changes):
    """Damage that rewrites keys of a JSON file (``...`` deletes a key; dotted keys reach into objects)."""
    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        for dotted, value in changes.items():
            *parents, key = dotted.split(".")
            target = data
            for parent in parents:
                target = target[parent]
            if value is ...:
                del target[key]
            else:
                target[key] = value
        path.write_text(json.dumps(data))
    return damage


DOMAIN = {"codec": CodecError, "text_encoder": ConditioningError}
CASES = []
for component in ("primary", "secondary", *VOCAL_ENCODERS, "codec", "text_encoder"):
    error = DOMAIN.get(component, ModelDirectoryError)
    weights = f"{component}/{'model.safetensors' if component in DOMAIN else UNET_WEIGHTS}"
    CASES += [
        pytest.param(f"{component}/config.json", invalid_json, error, id=f"{component}-config-invalid-json"),
        pytest.param(f"{component}/config.json", not_an_object, error, id=f"{component}-config-not-an-object"),
        pytest.param(weights, truncate, error, id=f"{component}-weights-truncated"),
        pytest.param(weights, remove, error, id=f"{component}-weights-missing"),
        pytest.param(component, remove, ModelDirectoryError, id=f"{component}-folder-missing"),
    ]
CASES += [
    # config values that do not fit the weights, or that the constructors refuse
    pytest.param("primary/config.json", edit_json(block_channels=[16, 32, 64]), ModelDirectoryError, id="primary-config-shapes"),
    pytest.param("secondary/config.json", edit_json(norm_groups="eight"), ModelDirectoryError, id="secondary-config-type"),
    pytest.param("primary_vocal_encoder/config.json", edit_json(num_blocks="x"), ModelDirectoryError, id="vocal-config-type"),
    pytest.param("codec/config.json", edit_json(model_type=...), CodecError, id="codec-config-no-model-type"),
    pytest.param("codec/config.json", edit_json(n_codebooks="nine"), CodecError, id="codec-config-type"),
    pytest.param("text_encoder/config.json", edit_json(d_model=64), ConditioningError, id="text-config-shapes"),
    pytest.param("text_encoder/tokenizer_config.json", invalid_json, ConditioningError, id="tokenizer-config-invalid-json"),
    # statistics
    pytest.param("latent_stats.json", invalid_json, ModelDirectoryError, id="stats-invalid-json"),
    pytest.param("latent_stats.json", not_an_object, ModelDirectoryError, id="stats-not-an-object"),
    pytest.param("latent_stats.json", edit_json(std=...), ModelDirectoryError, id="stats-missing-key"),
    pytest.param("latent_stats.json", edit_json(mean="zero"), ModelDirectoryError, id="stats-wrong-type"),
    pytest.param("latent_stats.json", edit_json(codebook_dim=4), ModelDirectoryError, id="stats-wrong-codec"),
    pytest.param("latent_stats.json", remove, ModelDirectoryError, id="stats-missing"),
    # the manifest
    pytest.param("pipeline.json", invalid_json, ModelDirectoryError, id="manifest-invalid-json"),
    pytest.param("pipeline.json", not_an_object, ModelDirectoryError, id="manifest-not-an-object"),
    pytest.param("pipeline.json", edit_json(sources=...), ModelDirectoryError, id="manifest-missing-sources"),
    pytest.param("pipeline.json", edit_json(**{"sources.codec.backend": ...}), ModelDirectoryError, id="manifest-missing-backend"),
    pytest.param("pipeline.json", edit_json(**{"sources.codec.backend": "pth"}), ModelDirectoryError, id="manifest-bad-backend"),
    pytest.param("pipeline.json", edit_json(**{"sources.text_encoder.max_length": "64"}), ModelDirectoryError,
                 id="manifest-max-length-type"),
    pytest.param("pipeline.json", edit_json(**{"sources.text_encoder": []}), ModelDirectoryError, id="manifest-source-type"),
    pytest.param("pipeline.json", edit_json(vocal_encoder="yes"), ModelDirectoryError, id="manifest-vocal-type"),
    pytest.param("pipeline.json", edit_json(vocal_encoder=False), ModelDirectoryError, id="manifest-vocal-disagrees"),
    pytest.param("pipeline.json", edit_json(**{"defaults.num_inference_steps": 0}), ModelDirectoryError, id="manifest-steps"),
    pytest.param("pipeline.json", edit_json(**{"defaults.duration": ...}), ModelDirectoryError, id="manifest-no-duration"),
    # the scheduler
    pytest.param("scheduler", remove, ModelDirectoryError, id="scheduler-folder-missing"),
    pytest.param("scheduler/scheduler_config.json", remove, ModelDirectoryError, id="scheduler-config-missing"),
    pytest.param("scheduler/scheduler_config.json", invalid_json, ModelDirectoryError, id="scheduler-config-invalid-json"),
    pytest.param("scheduler/scheduler_config.json", edit_json(_class_name="PNDMScheduler"), ModelDirectoryError,
                 id="scheduler-unsupported-class"),
    pytest.param("scheduler/scheduler_config.json", edit_json(beta_schedule="cubic"), ModelDirectoryError,
                 id="scheduler-bad-value"),
    pytest.param("scheduler/scheduler_config.json", edit_json(prediction_type="epsilon"), ModelDirectoryError,
                 id="scheduler-not-v-prediction"),
]


@pytest.mark.parametrize("target, damage, error", CASES)
def test_damaged_directory_names_the_file(model_dir, tmp_path, target, damage, error):
    copy = Path(shutil.copytree(model_dir, tmp_path / "model"))
    damage(copy / target)
    with pytest.raises(error) as raised:
        DiscoDiffPipeline.from_pretrained(copy)
    message = str(raised.value)
    assert str(copy / target) in message, message
    assert "\n" not in message and "again" in message, message  # one line, ending in the fix


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelDirectoryError, match="is not a discodiff model directory"):
        DiscoDiffPipeline.from_pretrained(tmp_path)


def test_damaged_codec_directory_given_directly(pipeline, tmp_path):
    codec_dir = pipeline.codec.save_pretrained(tmp_path / "codec")
    truncate(codec_dir / "model.safetensors")
    with pytest.raises(CodecError, match="model.safetensors: truncated or corrupt"):
        DacCodec.from_pretrained(codec_dir)


def test_loaded_pipeline_reads_nothing_from_its_files(model_dir, tmp_path):
    """Loaders memory-map safetensors files; the pipeline copies every tensor so the directory can be replaced."""
    copy = Path(shutil.copytree(model_dir, tmp_path / "model"))
    loaded = DiscoDiffPipeline.from_pretrained(copy)
    if sys.platform.startswith("linux"):
        mapped = [line for line in Path("/proc/self/maps").read_text().splitlines() if str(copy) in line]
        assert mapped == []
    shutil.rmtree(copy)
    assert all(torch.isfinite(p).all() for m in loaded._modules() for p in m.parameters())


# --- atomic saving -----------------------------------------------------------------------------------------


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def killed(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("failure, error", [(full_disk, OSError), (killed, KeyboardInterrupt)])
def test_failed_save_keeps_the_earlier_directory(pipeline, model_dir, tmp_path, monkeypatch, failure, error):
    earlier = DiscoDiffPipeline.from_pretrained(model_dir)  # an earlier model that differs from `pipeline`
    with torch.no_grad():
        for p in earlier.primary.parameters():
            p.add_(0.5)
    target = earlier.save_pretrained(tmp_path / "model")
    before = snapshot(target)
    sources = json.loads(json.dumps(pipeline.sources))
    monkeypatch.setattr(pipeline.secondary, "save_pretrained", failure)  # after codec, text encoder and primary
    with pytest.raises(error) as raised:
        pipeline.save_pretrained(target)
    assert error is not OSError or raised.value.errno == errno.ENOSPC
    assert snapshot(target) == before
    assert leftovers(tmp_path) == [] and pipeline.sources == sources


def test_failed_first_save_leaves_nothing(pipeline, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.latent_stats, "save", full_disk)
    with pytest.raises(OSError):
        pipeline.save_pretrained(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_save_back_into_the_loaded_directory(model_dir, tmp_path):
    """Export loads the pipeline in a directory and saves it back there with one stage replaced."""
    target = Path(shutil.copytree(model_dir, tmp_path / "model"))
    (target / "README.md").write_text("my model card")
    loaded = DiscoDiffPipeline.from_pretrained(target)
    with torch.no_grad():
        for p in loaded.secondary.parameters():
            p.add_(0.25)
    expected = {name: t.clone() for name, t in loaded.secondary.state_dict().items()}
    loaded.save_pretrained(target)
    assert leftovers(tmp_path) == [] and (target / "README.md").read_text() == "my model card"
    reloaded = DiscoDiffPipeline.from_pretrained(target)
    for name, tensor in reloaded.secondary.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    original = DiscoDiffPipeline.from_pretrained(model_dir)
    for module in ("primary", "codec", "text_encoder", "primary_vocal_encoder"):
        ours, theirs = getattr(reloaded, module).state_dict(), getattr(original, module).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), module


# --- sampling arguments --------------------------------------------------------------------------------------


@pytest.fixture
def no_compute(pipeline, monkeypatch):
    """Record every U-Net and text encoder call (none may happen when an argument is refused)."""
    calls = []
    for name in ("primary", "secondary", "text_encoder"):
        module = getattr(pipeline, name)
        forward = module.forward

        def recording(*args, _name=name, _forward=forward, **kwargs):
            calls.append(_name)
            return _forward(*args, **kwargs)

        monkeypatch.setattr(module, "forward", recording)
    return calls


FAST = dict(duration=0.3, num_inference_steps=2, output_type="latent", progress=False)
BAD_ARGUMENTS = [
    pytest.param(dict(num_inference_steps=0), "num_inference_steps", id="steps-zero"),
    pytest.param(dict(num_inference_steps=-3), "num_inference_steps", id="steps-negative"),
    pytest.param(dict(num_inference_steps=2.5), "num_inference_steps", id="steps-fraction"),
    pytest.param(dict(num_inference_steps=MAX_INFERENCE_STEPS + 1), "num_inference_steps", id="steps-too-many"),
    pytest.param(dict(duration=0), "duration", id="duration-zero"),
    pytest.param(dict(duration=-1.0), "duration", id="duration-negative"),
    pytest.param(dict(duration=math.nan), "duration", id="duration-nan"),
    pytest.param(dict(duration=601.0), "longest output of one call", id="duration-too-long"),
    pytest.param(dict(overlap=-1.0), "overlap", id="overlap-negative"),
    pytest.param(dict(overlap=math.nan), "overlap", id="overlap-nan"),
    pytest.param(dict(overlap="1"), "overlap", id="overlap-string"),
    pytest.param(dict(overlap=1e6), "overlap", id="overlap-past-window"),
    pytest.param(dict(text_guidance=math.nan), "text_guidance", id="text-guidance-nan"),
    pytest.param(dict(text_guidance=math.inf), "text_guidance", id="text-guidance-inf"),
    pytest.param(dict(text_guidance=-0.5), "text_guidance", id="text-guidance-negative"),
    pytest.param(dict(vocal_guidance=101.0), "vocal_guidance", id="vocal-guidance-too-big"),
    pytest.param(dict(prompt=[]), "empty list", id="no-prompts"),
    pytest.param(dict(prompt=["", "   "]), "blank", id="blank-prompts"),
    pytest.param(dict(prompt="\t"), "blank", id="blank-prompt"),
    pytest.param(dict(generator=[torch.Generator()] * 3), "3 generators for 2 prompt", id="generators-length"),
    pytest.param(dict(output_type="wav"), "output_type", id="output-type"),
    pytest.param(dict(vocal=torch.zeros(2, 2, 100)), "vocal must be", id="vocal-shape"),
]


@pytest.mark.parametrize("arguments, message", BAD_ARGUMENTS)
def test_bad_arguments_fail_before_any_compute(pipeline, no_compute, arguments, message):
    kwargs = {"prompt": ["organ", "strings"], **FAST, **arguments}
    with pytest.raises(GenerationError, match=message) as raised:
        pipeline(**kwargs)
    assert no_compute == [] and "\n" not in str(raised.value)


def test_range_is_in_the_message(pipeline, no_compute):
    with pytest.raises(GenerationError, match=f"1 … {MAX_INFERENCE_STEPS}"):
        pipeline("organ", **{**FAST, "num_inference_steps": 0})
    with pytest.raises(GenerationError, match="at most 600 s"):
        pipeline("organ", **{**FAST, "duration": 0})


def test_too_long_vocal_is_refused(pipeline, no_compute, monkeypatch):
    monkeypatch.setattr("discodiff.call_inputs.MAX_DURATION_SECONDS", 0.5)
    with pytest.raises(GenerationError, match="cut it into parts"):
        pipeline("organ", vocal=tone(0.6), **FAST)
    assert no_compute == []


def test_none_means_the_default(pipeline, no_compute, monkeypatch):
    monkeypatch.setitem(pipeline.defaults, "num_inference_steps", 3)
    monkeypatch.setitem(pipeline.defaults, "duration", 0.2)
    out = pipeline("organ", output_type="latent", progress=False)
    assert no_compute.count("primary") == 3 and no_compute.count("secondary") == 3
    assert out.latents.shape[-1] == pipeline.codec.frames_for(round(0.2 * 44100))


@pytest.mark.parametrize("name", ["ddim", "dpm++", "euler", "cosine-dpm"])
def test_sample_refuses_fewer_than_one_step(name):
    scheduler = make_scheduler(name)
    for steps in (0, -1):
        with pytest.raises(GenerationError, match="num_inference_steps"):
            sample(lambda x, t: torch.zeros_like(x), (1, 2, 4), scheduler, steps, progress=False)
    if name != "cosine-dpm":  # the discrete schedules have 1000 training steps
        with pytest.raises(GenerationError, match="1 … 1000"):
            sample(lambda x, t: torch.zeros_like(x), (1, 2, 4), scheduler, 1001, progress=False)


@pytest.mark.parametrize("chunk_seconds", [0, -1.0, 0.5, math.nan, math.inf])
def test_codec_chunk_seconds_is_checked(tiny_codec, chunk_seconds):
    audio = tone(0.2)[None]
    with pytest.raises(CodecError, match=f"at least {MIN_CHUNK_SECONDS:g} s"):
        tiny_codec.encode(audio, chunk_seconds=chunk_seconds)
    codes = tiny_codec.encode_codes(audio, chunk_seconds=None)
    with pytest.raises(CodecError, match="chunk_seconds"):
        tiny_codec.decode_codes(codes, chunk_seconds=chunk_seconds)
    with pytest.raises(CodecError, match="chunk_seconds"):
        tiny_codec.decode_latents(tiny_codec.encode(audio, chunk_seconds=1.0), chunk_seconds=chunk_seconds)


# --- prompt truncation ------------------------------------------------------------------------------------


def test_long_prompt_warns_with_the_dropped_count():
    conditioner = build_tiny_t5_conditioner(seed=0, max_length=8)
    prompt = "a prompt much longer than eight bytes"
    tokens = len(conditioner.tokenizer(prompt).input_ids)
    with pytest.warns(PromptTruncatedWarning, match=f"limit of 8 tokens.*{tokens - 8} tokens dropped") as record:
        conditioner([prompt, "short"])
    assert len([w for w in record if issubclass(w.category, PromptTruncatedWarning)]) == 1
    assert "1 of 2 prompts" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        conditioner(["short", "drums"])
