"""Convert a LAION CLAP checkpoint (``laion_clap``'s ``.pt``) to a ``transformers.ClapModel`` directory.

``laion-clap`` itself is not needed (it pins numpy<2 and imports torchvision): the checkpoint's state dict is
renamed key by key. The renaming is the one of transformers' own conversion script
(``models/clap/convert_clap_original_pytorch_to_hf.py``: ``KEYS_TO_MODIFY_MAPPING``, the ``nn.Sequential``
projections → ``linear1``/``linear2``, the audio attention's fused ``qkv`` split into ``query``/``key``/``value``),
which builds the original model only to read its state dict. Unlike that script the weights are loaded with
``strict=True``: the LAION-only tensors that ``ClapModel`` has no place for (:data:`LAION_ONLY_KEYS`, none of them
used by the embeddings) are dropped by name, and any other mismatch is an error that lists the keys.

The default configuration is the one of the music checkpoints (``music_audioset_epoch_15_esc_90.14.pt``,
``music_speech_audioset_epoch_15_esc_89.98.pt``): HTSAT-base audio tower without fusion, RoBERTa-base text tower,
512-dim projections.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from ..errors import ConditioningError, first_line

# LAION key fragment → transformers key fragment, applied in this order (transformers' conversion script).
KEYS_TO_MODIFY_MAPPING = {
    "text_branch": "text_model",
    "audio_branch": "audio_model.audio_encoder",
    "attn": "attention.self",
    "self.proj": "output.dense",
    "attention.self_mask": "attn_mask",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "bn0": "batch_norm",
}

# LAION tensors with no counterpart in ClapModel; none is used by the audio or text embeddings.
LAION_ONLY_KEYS = (
    re.compile(r"^audio_branch\.(spectrogram_extractor|logmel_extractor)\."),  # STFT/mel: the feature extractor's job
    re.compile(r"^audio_branch\.(tscam_conv|head)\."),  # HTSAT's AudioSet classification head
    re.compile(r"^audio_branch\..*\.attn_mask$"),  # shifted-window masks, recomputed by transformers
    re.compile(r"^(text|audio)_transform\."),  # training-only MLPs after the projections
)

# ClapModel buffers that are fixed by the configuration; taken from the freshly built model when a checkpoint
# lacks them (LAION checkpoints written with newer transformers have no ``position_ids``, none has ``token_type_ids``).
DERIVED_BUFFERS = re.compile(r"(\.position_ids|\.token_type_ids|\.relative_position_index|\.num_batches_tracked)$")

_SEQUENTIAL = re.compile(r".*sequential.(\d+).*")
_PROJECTION = re.compile(r".*_projection.(\d+).*")


def music_clap_config():
    """``ClapConfig`` of LAION's music checkpoints: HTSAT-base (embed 128, depths 2-2-12-2, 1024 features), no
    fusion; RoBERTa-base (768 wide, 12 layers, LayerNorm eps 1e-5 as in ``roberta-base``); projections of 512."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    audio = ClapAudioConfig(patch_embeds_hidden_size=128, depths=[2, 2, 12, 2], num_attention_heads=[4, 8, 16, 32],
                            hidden_size=1024, window_size=8, spec_size=256, num_mel_bins=64, enable_fusion=False)
    text = ClapTextConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
    return ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=512)


def music_clap_feature_extractor():
    """The feature extractor of the music checkpoints: 48 kHz, 10 s, 64 mel bins over 50–14000 Hz, no fusion."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(feature_size=64, sampling_rate=48_000, hop_length=480, max_length_s=10,
                                fft_window_size=1024, frequency_min=50, frequency_max=14_000,
                                truncation="rand_trunc", padding="repeatpad")


def _unwrap(state: dict) -> dict:
    """The tensors of a LAION checkpoint: ``state["state_dict"]`` when present, ``module.`` prefixes stripped."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ConditioningError("the CLAP checkpoint holds no state dict; give a LAION CLAP .pt "
                                "(e.g. music_audioset_epoch_15_esc_90.14.pt)")
    return {key.removeprefix("module."): value for key, value in state.items()}


def laion_to_transformers_state_dict(state: dict) -> dict:
    """A LAION CLAP state dict (or whole checkpoint) renamed to ``ClapModel``'s keys, ``qkv`` split in three.

    Tensors listed in :data:`LAION_ONLY_KEYS` are dropped; every other key is renamed, even unknown ones (so a
    strict load names them).
    """
    out = {}
    for key, value in _unwrap(state).items():
        if any(pattern.search(key) for pattern in LAION_ONLY_KEYS):
            continue
        for old, new in KEYS_TO_MODIFY_MAPPING.items():
            if old in key:
                key = key.replace(old, new)
        if m := _SEQUENTIAL.match(key):
            key = key.replace(f"sequential.{m[1]}.", f"layers.{int(m[1]) // 3}.linear.")
        elif m := _PROJECTION.match(key):
            key = key.replace(f"_projection.{m[1]}.", f"_projection.linear{1 if int(m[1]) == 0 else 2}.")
        if "qkv" in key:
            query, key_part, value_part = value.chunk(3, dim=0)
            for name, part in (("query", query), ("key", key_part), ("value", value_part)):
                out[key.replace("qkv", name)] = part
        else:
            out[key] = value
    return out


_INVERSE_AUDIO = (
    ("batch_norm", "bn0"),
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("attention.self.", "attn."),
    ("attention.output.dense", "attn.proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
)


def transformers_to_laion_state_dict(state: dict) -> dict:
    """The inverse of :func:`laion_to_transformers_state_dict` on ``ClapModel``'s keys: LAION's names, ``query`` /
    ``key`` / ``value`` concatenated into ``qkv``; ``token_type_ids`` (not in LAION checkpoints) left out."""
    out: dict = {}
    pending: dict = {}
    for key, value in state.items():
        if key.endswith(".token_type_ids"):
            continue
        if key.startswith("text_model."):
            key = "text_branch." + key.removeprefix("text_model.")
        elif key.startswith("audio_model.audio_encoder."):
            key = "audio_branch." + key.removeprefix("audio_model.audio_encoder.")
            for new, old in _INVERSE_AUDIO:
                key = key.replace(new, old)
            if m := re.match(r"(.*attn\.)(query|key|value)\.(weight|bias)$", key):
                pending.setdefault(f"{m[1]}qkv.{m[3]}", {})[m[2]] = value
                continue
        key = re.sub(r"_projection\.linear([12])\.", lambda m: f"_projection.{0 if m[1] == '1' else 2}.", key)
        out[key] = value
    for key, parts in pending.items():
        out[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def load_laion_checkpoint(pt_path: str | Path) -> dict:
    """``torch.load`` a LAION ``.pt``: ``weights_only=True`` first, the full unpickler only when the file needs it
    (LAION's training checkpoints may pickle their arguments)."""
    pt_path = Path(pt_path)
    try:
        return torch.load(pt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except (OSError, EOFError, RuntimeError, ValueError) as err:
        raise ConditioningError(f"{pt_path}: not a loadable CLAP checkpoint, truncated or corrupt ({first_line(err)}); "
                                "download it again") from err
    try:
        return torch.load(pt_path, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError, ValueError, AttributeError, ModuleNotFoundError,
            pickle.UnpicklingError) as err:
        raise ConditioningError(f"{pt_path}: not a loadable CLAP checkpoint ({first_line(err)}); "
                                "download it again") from err


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" … ({len(keys)} in all)" if len(keys) > limit else "")


def laion_to_clap_model(state: dict, config=None):
    """A ``ClapModel`` (eval mode) of ``config`` (default :func:`music_clap_config`) holding the LAION state dict
    ``state``; :class:`ConditioningError` naming the missing / unexpected / misshaped keys when they do not match."""
    from transformers import ClapModel

    config = config if config is not None else music_clap_config()
    converted = laion_to_transformers_state_dict(state)
    model = ClapModel(config).eval()
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in converted and DERIVED_BUFFERS.search(key):
            converted[key] = value.clone()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    shapes = sorted(f"{key} {tuple(converted[key].shape)} vs {tuple(value.shape)}" for key, value in expected.items()
                    if key in converted and tuple(converted[key].shape) != tuple(value.shape))
    problems = []
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape (checkpoint vs config) {_listing(shapes, 4)}")
    if problems:
        hint = " (a fusion checkpoint? only enable_fusion=False is supported)" if any("fusion" in k for k in unexpected) else ""
        raise ConditioningError(f"the CLAP checkpoint does not fit the HTSAT-base + RoBERTa ClapModel: "
                                f"{'; '.join(problems)}{hint}; give a LAION music checkpoint "
                                "(music_audioset_epoch_15_esc_90.14.pt) or a matching config")
    model.load_state_dict(converted, strict=True)
    return model


def load_tokenizer(path: str | Path):
    """A RoBERTa tokenizer from a local directory (a tokenizer or a CLAP directory that has one)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConditioningError(f"--tokenizer {path}: no RoBERTa tokenizer there ({first_line(err)}); give a folder "
                                "with roberta-base's tokenizer files (vocab.json, merges.txt)") from err


CLAP_MARKER = "config.json"


def convert_clap_checkpoint(pt_path: str | Path, out_dir: str | Path, config=None, overwrite: bool = False,
                            tokenizer=None, feature_extractor=None) -> Path:
    """Write the LAION CLAP ``.pt`` ``pt_path`` as a ``transformers`` CLAP directory ``out_dir``, atomically
    (built aside, then renamed); ``out_dir`` must be new or empty, or hold a CLAP model and ``overwrite``.

    ``config``: the ``ClapConfig`` [default: :func:`music_clap_config`]. ``tokenizer``: a RoBERTa tokenizer or a
    local folder holding one; with it the folder is a full ``ClapProcessor`` directory, without it only the model
    and the feature extractor (add the tokenizer's files later).
    """
    from transformers import ClapProcessor

    from ..outputs import atomic_directory, check_output_dir

    out_dir = Path(out_dir)
    check_output_dir(out_dir, what="CLAP directory", marker=CLAP_MARKER, overwrite=overwrite)
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    model = laion_to_clap_model(load_laion_checkpoint(pt_path), config)
    feature_extractor = feature_extractor if feature_extractor is not None else music_clap_feature_extractor()
    if tokenizer is not None and len(tokenizer) > model.config.text_config.vocab_size:
        raise ConditioningError(f"the tokenizer has {len(tokenizer)} tokens, the text tower "
                                f"{model.config.text_config.vocab_size}; give roberta-base's tokenizer")
    with atomic_directory(out_dir) as temporary:
        model.save_pretrained(str(temporary))
        if tokenizer is not None:
            ClapProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(str(temporary))
        else:
            feature_extractor.save_pretrained(str(temporary))
    return out_dir
