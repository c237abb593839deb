"""Tiny random text encoders for tests, examples and offline demos; they need no download.

They keep the real architectures (T5 encoder, CLAP) with widths of a few dozen, and tokenizers
built in-process: ByT5 (bytes, no vocabulary file) for T5 and a byte-level BPE without merges for
CLAP's RoBERTa. Both round-trip through ``save_pretrained`` / ``from_pretrained``. Their outputs
are not meaningful.
"""

from __future__ import annotations

import torch

from .text import ClapTextConditioner, FlanT5Conditioner

CLAP_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa's ids 0 … 4


def build_tiny_t5_conditioner(
    seed: int = 0, max_length: int = FlanT5Conditioner.default_max_length
) -> FlanT5Conditioner:
    """A :class:`FlanT5Conditioner` on a seeded random 2-layer T5 encoder (``d_model`` 32) with ``ByT5Tokenizer``."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    config = T5Config(d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64, vocab_size=384)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    return FlanT5Conditioner(model.eval(), ByT5Tokenizer(), max_length)


def build_tiny_clap_tokenizer():
    """A RoBERTa tokenizer over the 256 byte-level symbols with no merges (one token per byte)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    symbols = list(CLAP_SPECIAL_TOKENS) + sorted(ByteLevel.alphabet())
    return RobertaTokenizer(vocab={symbol: index for index, symbol in enumerate(symbols)}, merges=[])


def tiny_clap_config():
    """A ``transformers.ClapConfig`` with 2-layer, 32-wide text and audio towers and 16-dim projections."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    text_config = ClapTextConfig(
        vocab_size=len(CLAP_SPECIAL_TOKENS) + 256,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    audio_config = ClapAudioConfig(
        hidden_size=32, patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], window_size=4
    )
    return ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(), projection_dim=16)


def build_tiny_clap_model(seed: int = 0):
    """A seeded random ``transformers.ClapModel`` of :func:`tiny_clap_config`, in eval mode."""
    from transformers import ClapModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ClapModel(tiny_clap_config()).eval()


def build_tiny_clap_conditioner(
    seed: int = 0, max_length: int = ClapTextConditioner.default_max_length
) -> ClapTextConditioner:
    """A :class:`ClapTextConditioner` on :func:`build_tiny_clap_model` with :func:`build_tiny_clap_tokenizer`."""
    return ClapTextConditioner(build_tiny_clap_model(seed), build_tiny_clap_tokenizer(), max_length)
