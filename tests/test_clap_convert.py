"""LAION CLAP checkpoint → transformers ClapModel (:mod:`discodiff.evaluation.clap_convert`), offline and fast.

The LAION key names used here come from transformers' own conversion script
(``models/clap/convert_clap_original_pytorch_to_hf.py``), which our mapping follows, and from LAION's module
names that script renames. A tiny random ClapModel is written in that layout by the inverse mapping, saved as
LAION saves it (``{"state_dict": {"module." + key: tensor}}``) and converted back, so these tests check our
mapping against transformers' naming on tiny configs, not against laion-clap's code, which cannot be installed
here (it pins numpy<2 and imports torchvision).
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from discodiff.cli.app import app
from discodiff.conditioning.tiny import build_tiny_clap_model, build_tiny_clap_tokenizer, tiny_clap_config
from discodiff.errors import ConditioningError
from discodiff.evaluation import clap_convert
from discodiff.evaluation.clap_convert import (
    convert_clap_checkpoint,
    laion_to_transformers_state_dict,
    transformers_to_laion_state_dict,
)

runner = CliRunner()


def _laion_state(model) -> dict:
    """The LAION layout of ``model``'s weights, with the LAION-only tensors a real checkpoint also holds."""
    state = transformers_to_laion_state_dict(model.state_dict())
    extras = {
        "audio_branch.spectrogram_extractor.stft.conv_real.weight": torch.zeros(3, 1, 4),
        "audio_branch.logmel_extractor.melW": torch.zeros(4, 3),
        "audio_branch.tscam_conv.weight": torch.zeros(5, 32, 1, 1),
        "audio_branch.head.weight": torch.zeros(5, 5),
        "audio_branch.layers.0.blocks.1.attn_mask": torch.zeros(4, 16, 16),
        "text_transform.sequential.0.weight": torch.zeros(16, 16),
        "audio_transform.sequential.3.bias": torch.zeros(16),
    }
    return {**state, **extras}


def _save_laion(state: dict, path):
    torch.save({"epoch": 15, "state_dict": {"module." + key: value for key, value in state.items()}}, path)
    return path


def _embeddings(model):
    torch.manual_seed(1)
    config = model.config.audio_config
    features = torch.randn(2, 1, 1001, config.num_mel_bins)
    input_ids = torch.randint(5, 261, (2, 9))
    with torch.inference_mode():
        audio = model.get_audio_features(input_features=features, is_longer=torch.zeros(2, 1, dtype=torch.bool))
        text = model.get_text_features(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    pooled = [getattr(out, "pooler_output", out) for out in (audio, text)]
    return pooled


def test_forward_mapping_covers_every_key_and_inverts():
    model = build_tiny_clap_model()
    expected = model.state_dict()
    laion = _laion_state(model)
    assert any(".attn.qkv.weight" in key for key in laion) and "text_projection.2.weight" in laion
    assert "audio_branch.bn0.weight" in laion and "audio_branch.layers.0.blocks.0.mlp.fc1.weight" in laion
    converted = laion_to_transformers_state_dict({"state_dict": {"module." + k: v for k, v in laion.items()}})
    leftovers = set(converted) - set(expected)
    assert not leftovers, leftovers
    assert set(expected) - set(converted) == {key for key in expected if key.endswith(".token_type_ids")}
    for key, value in converted.items():
        assert torch.equal(value, expected[key]), key


def test_convert_checkpoint_gives_the_same_embeddings(tmp_path):
    from transformers import ClapFeatureExtractor, ClapModel, ClapProcessor

    original = build_tiny_clap_model()
    pt = _save_laion(_laion_state(original), tmp_path / "tiny_clap.pt")
    out = convert_clap_checkpoint(pt, tmp_path / "clap", config=tiny_clap_config())
    assert out == tmp_path / "clap"
    loaded = ClapModel.from_pretrained(str(out)).eval()
    for got, want in zip(_embeddings(loaded), _embeddings(original)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    extractor = ClapFeatureExtractor.from_pretrained(str(out))
    assert (extractor.sampling_rate, extractor.frequency_min, extractor.truncation) == (48000, 50, "rand_trunc")
    # adding the tokenizer later, as the command's hint says, makes it a full processor directory
    build_tiny_clap_tokenizer().save_pretrained(str(out))
    assert ClapProcessor.from_pretrained(str(out)).tokenizer is not None
    # an existing CLAP directory is kept unless overwrite
    with pytest.raises(Exception, match="--overwrite"):
        convert_clap_checkpoint(pt, out, config=tiny_clap_config())
    convert_clap_checkpoint(pt, out, config=tiny_clap_config(), overwrite=True)


def test_missing_key_is_named(tmp_path):
    state = _laion_state(build_tiny_clap_model())
    del state["audio_branch.layers.1.blocks.0.attn.qkv.weight"]
    state["audio_branch.fusion_model.weight"] = torch.zeros(1)
    pt = _save_laion(state, tmp_path / "broken.pt")
    with pytest.raises(ConditioningError) as info:
        convert_clap_checkpoint(pt, tmp_path / "clap", config=tiny_clap_config())
    message = str(info.value)
    assert "audio_model.audio_encoder.layers.1.blocks.0.attention.self.query.weight" in message
    assert "audio_model.audio_encoder.fusion_model.weight" in message and "fusion" in message
    assert not (tmp_path / "clap").exists()


def test_music_config_shapes():
    config = clap_convert.music_clap_config()
    assert list(config.audio_config.depths) == [2, 2, 12, 2]
    assert (config.audio_config.patch_embeds_hidden_size, config.audio_config.hidden_size) == (128, 1024)
    assert (config.text_config.hidden_size, config.projection_dim, config.audio_config.enable_fusion) == (768, 512, False)


def test_cli_convert_clap(tmp_path, monkeypatch):
    from transformers import ClapProcessor

    monkeypatch.setattr(clap_convert, "music_clap_config", tiny_clap_config)
    pt = _save_laion(_laion_state(build_tiny_clap_model()), tmp_path / "tiny_clap.pt")
    tokenizer_dir = tmp_path / "tokenizer"
    build_tiny_clap_tokenizer().save_pretrained(str(tokenizer_dir))
    result = runner.invoke(app, ["convert-clap", str(pt), str(tmp_path / "clap"), "--tokenizer", str(tokenizer_dir)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "no tokenizer" not in result.output
    assert ClapProcessor.from_pretrained(str(tmp_path / "clap")).tokenizer is not None
    result = runner.invoke(app, ["convert-clap", str(pt), str(tmp_path / "clap2")])
    assert result.exit_code == 0, result.output
    assert "no tokenizer saved" in result.output
    result = runner.invoke(app, ["convert-clap", str(pt), str(tmp_path / "clap2")])
    assert result.exit_code == 1 and "--overwrite" in result.output
