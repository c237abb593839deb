"""The shipped model (discodiff/pretrained/bach-chorales) and the shipping step that writes such a directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from conftest import tone
from discodiff.audio import save_audio
from discodiff.cli import app
from discodiff.errors import ModelDirectoryError, OutputError
from discodiff.pipeline import DiscoDiffPipeline
from discodiff.pretrained import (CHECKSUM_FILE, MAX_SHIPPED_BYTES, SHIPPED_AR_MODEL_NAME, shipped_model_dir,
                                  verify_checksums)
from discodiff.pretrained import ship as ship_module
from discodiff.pretrained.ship import ship_model

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ship") / "model"
    result = runner.invoke(app, ["new-model", str(directory), "--config", str(TINY_CONFIG)])
    assert result.exit_code == 0, result.output
    return directory


@pytest.fixture
def shipped(tiny_model, tmp_path) -> Path:
    card = tmp_path / "card.md"
    card.write_text("# tiny\n")
    return ship_model(tiny_model, card, tmp_path / "shipped")


def weight_dtypes(directory: Path) -> set[torch.dtype]:
    dtypes = set()
    for path in directory.rglob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            dtypes |= {f.get_tensor(key).dtype for key in f.keys()}
    return dtypes


def test_shipping_bundles_everything_in_fp16_and_loads_in_float32(shipped, tiny_model):
    assert (shipped / "README.md").read_text() == "# tiny\n"
    manifest = json.loads((shipped / "pipeline.json").read_text())
    assert all(manifest["sources"][name]["bundled"] for name in ("codec", "text_encoder"))
    assert {"codec", "text_encoder", "primary", "secondary"} <= {p.name for p in shipped.iterdir()}
    assert weight_dtypes(shipped) == {torch.float16}
    verify_checksums(shipped)
    pipeline = DiscoDiffPipeline.from_pretrained(shipped)
    assert {p.dtype for name in ("codec", "text_encoder", "primary", "secondary")
            for p in getattr(pipeline, name).parameters()} == {torch.float32}
    original = DiscoDiffPipeline.from_pretrained(tiny_model)
    for name in ("primary", "secondary", "codec"):  # the fp16 weights round to the trained ones
        for ours, theirs in zip(getattr(pipeline, name).state_dict().values(), getattr(original, name).state_dict().values()):
            torch.testing.assert_close(ours.float(), theirs.half().float())


def test_checksums_name_every_changed_missing_or_extra_file(shipped):
    weights = shipped / "primary" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (shipped / "latent_stats.json").unlink()
    (shipped / "stray.txt").write_text("x")
    with pytest.raises(ModelDirectoryError) as info:
        verify_checksums(shipped)
    message = str(info.value)
    assert "primary/diffusion_pytorch_model.safetensors changed" in message
    assert "latent_stats.json missing" in message and "stray.txt not recorded" in message
    (shipped / CHECKSUM_FILE).unlink()
    with pytest.raises(ModelDirectoryError, match="checksums.json: missing"):
        verify_checksums(shipped)


def test_shipping_refuses_an_oversized_model_and_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    card = tmp_path / "card.md"
    card.write_text("# tiny\n")
    monkeypatch.setattr(ship_module, "MAX_SHIPPED_BYTES", 1000)
    with pytest.raises(OutputError, match="over the 0 MiB"):
        ship_model(tiny_model, card, tmp_path / "shipped")
    assert not (tmp_path / "shipped").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.md"]


def test_shipping_refuses_to_replace_a_model_unless_told(shipped, tiny_model, tmp_path):
    before = (shipped / CHECKSUM_FILE).read_text()
    with pytest.raises(OutputError, match="--overwrite"):
        ship_model(tiny_model, tmp_path / "card.md", shipped)
    assert (shipped / CHECKSUM_FILE).read_text() == before


# --- the model in the repository -------------------------------------------------------------------

def test_the_shipped_model_is_small_fp16_and_its_checksums_are_recorded():
    directory = shipped_model_dir()
    verify_checksums(directory)  # every file recorded, none changed, none extra
    recorded = json.loads((directory / CHECKSUM_FILE).read_text())
    assert sum(entry["bytes"] for entry in recorded.values()) <= MAX_SHIPPED_BYTES
    assert weight_dtypes(directory) == {torch.float16}
    assert "validation" in (directory / "README.md").read_text()  # the card states the split


def test_the_shipped_model_loads_and_accompanies_a_vocal_at_its_length(tmp_path):
    save_audio(tmp_path / "vocal.wav", tone(1.3, freqs=(392.0,)))
    result = runner.invoke(app, ["sample", "--prompt", "a chorale", "--vocal", str(tmp_path / "vocal.wav"),
                                 "--out", str(tmp_path / "a.wav"), "--steps", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(f"using the shipped model {shipped_model_dir()}")
    audio, rate = sf.read(tmp_path / "a.wav")
    assert rate == 44100 and audio.shape == (round(1.3 * 44100),)
    assert audio.std() > 1e-4  # sound, not silence


def test_an_ar_model_ships_too(tmp_path):
    """ship_model takes any generating family: an AR model's stages, tokenizer and encoders are bundled in fp16."""
    from discodiff import load_pipeline
    from discodiff.ar import ARPipeline

    model = tmp_path / "ar"
    result = runner.invoke(app, ["new-model", str(model), "--config", str(TINY_CONFIG.with_name("ar_tiny.yaml"))])
    assert result.exit_code == 0, result.output
    card = tmp_path / "card.md"
    card.write_text("# tiny ar\n")
    shipped = ship_model(model, card, tmp_path / "shipped")
    assert {"semantic", "coarse", "fine", "codec", "text_encoder"} <= {p.name for p in shipped.iterdir()}
    tokenizer = shipped / "semantic_tokenizer.safetensors"  # k-means centroids stay float32 (small; what assign uses)
    assert weight_dtypes(shipped) == {torch.float16, torch.float32} and tokenizer.is_file()
    with safe_open(str(tokenizer), framework="pt") as f:
        assert {f.get_tensor(key).dtype for key in f.keys()} == {torch.float32}
    verify_checksums(shipped)
    loaded = load_pipeline(shipped)
    assert isinstance(loaded, ARPipeline)
    assert {p.dtype for model in loaded.stages.values() for p in model.parameters()} == {torch.float32}


def test_the_shipped_ar_model_loads_and_accompanies_a_vocal_at_its_length(tmp_path):
    directory = shipped_model_dir(SHIPPED_AR_MODEL_NAME)
    verify_checksums(directory)
    recorded = json.loads((directory / CHECKSUM_FILE).read_text())
    assert sum(entry["bytes"] for entry in recorded.values()) <= MAX_SHIPPED_BYTES
    assert "validation" in (directory / "README.md").read_text()
    save_audio(tmp_path / "vocal.wav", tone(0.4, freqs=(392.0,)))
    result = runner.invoke(app, ["sample", "--model", str(directory), "--prompt", "a chorale", "--vocal",
                                 str(tmp_path / "vocal.wav"), "--out", str(tmp_path / "a.wav"), "--quiet"])
    assert result.exit_code == 0, result.output
    audio, rate = sf.read(tmp_path / "a.wav")
    assert rate == 44100 and audio.shape == (round(0.4 * 44100),) and audio.std() > 1e-4
