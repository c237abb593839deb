"""``ARPipeline``: prompt (+ vocal) → semantic tokens → coarse codes → fine codes → decode, on one DAC codec.

Shapes: audio ``[B, 1, T]`` at the codec's rate; codes ``[B, K, L]``; semantic tokens ``[B, Ls]`` at the feature
extractor's frame rate (the codec's for :class:`~discodiff.conditioning.semantic.CodecFeatures`, 50 Hz for HuBERT).
The vocal's semantic tokens come from the same extractor and tokenizer as the accompaniment's. Guidance: separate text and vocal scales, batched
(:mod:`discodiff.ar.sampling`); the vocal scale acts on the semantic and coarse stages (the fine stage has no vocal).

Long-form: a stage's window is the model's training crop (``defaults["duration"]``) at the stage's frame rate, fewer
frames where its ``max_length`` admits fewer. A longer output is made stage by stage over the whole take, window by
window (:mod:`discodiff.long_form`): each window continues the frames of its overlap with the one before (the
sampler's ``prefix``), its conditions are its own span of the whole take's, and it adds the frames after the overlap.
An output that fits one window is one call of each stage, as without long-form.

A model directory::

    pipeline.json                   family ar; sources (codec, text encoder, SSL features); sampling defaults;
                                    pattern; coarse_codebooks; tokenizer (features, codebooks, layer, fitted)
    semantic/ coarse/ fine/         one ARTransformer each (config.json + diffusion_pytorch_model.safetensors)
    semantic_tokenizer.safetensors  k-means centroids (SemanticTokenizer)
    codec/ text_encoder/            only when bundled (locally built ones no hub has)
    semantic_features/              the SSL model, only when bundled (the tiny HuBERT)
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from ..call_inputs import check_duration, check_generator, check_prompts, check_scale, num_output_samples, vocal_batch
from ..codec.dac_codec import MIN_CHUNK_SECONDS
from ..codec.resolve import CodecConfig
from ..conditioning.resolve import TextEncoderConfig
from ..configuration import check_types, from_dict
from ..errors import ConfigError, GenerationError, ModelDirectoryError, is_integer
from ..guidance import Generators
from ..long_form import Window, overlap_frames, plan_windows
from ..model_files import (MODEL_CONFIG, REPAIR, carry_over, component_location, in_memory, inside, load_model,
                           read_json_object, sections_problem)
from ..model_encoders import load_encoders, save_bundled_encoders
from ..outputs import atomic_directory
from ..pipeline_utils import FAMILY_KEY, PIPELINE_FILE
from .config import FAMILY_NAME, FEATURE_KINDS, STAGES, ARSamplingConfig
from .patterns import PATTERN_NAMES
from .sampling import SamplingSettings, sample_stage
from ..conditioning.semantic import CodecFeatures, SemanticTokenizer
from ..conditioning.ssl import SSLFeatures, resolve_ssl_features
from .stages import StageTokens, stage_conditions, stage_specs
from .transformer import ARTransformer

TOKENIZER_FILE = "semantic_tokenizer.safetensors"
FEATURES_DIR = "semantic_features"
COMPONENTS = ("codec", "text_encoder", FEATURES_DIR, *STAGES, TOKENIZER_FILE, PIPELINE_FILE)
OUTPUT_TYPES = ("np", "pt", "codes")


@dataclass
class ARPipelineOutput(BaseOutput):
    """``audios [B, 1, T]`` (numpy or torch; None for ``output_type="codes"``), ``codes [B, K, L]``, ``semantic
    [B, Ls]`` (the generated accompaniment semantic tokens) and ``sample_rate``."""

    audios: np.ndarray | torch.Tensor | None
    codes: torch.Tensor
    semantic: torch.Tensor
    sample_rate: int


class ARPipeline:
    """The AR baseline: three :class:`ARTransformer` stages (``semantic``, ``coarse``, ``fine``) over a codec's codes,
    a frozen text encoder, and a :class:`SemanticTokenizer` over ``features`` (:class:`CodecFeatures` of the codec's
    first codebooks, or :class:`SSLFeatures`). ``sources`` records where the codec, text encoder and SSL model come
    from; ``defaults`` are the sampling defaults (:class:`~discodiff.ar.config.ARSamplingConfig` fields);
    ``tokenizer_fitted`` is False for the random centroids of an untrained model."""

    def __init__(self, codec, text_encoder, tokenizer: SemanticTokenizer, features: CodecFeatures | SSLFeatures,
                 stages: dict[str, ARTransformer], pattern: str, coarse_codebooks: int, tokenizer_fitted: bool,
                 sources: dict, defaults: dict):
        self.codec, self.text_encoder, self.tokenizer, self.features = codec, text_encoder, tokenizer, features
        self.stages = dict(stages)
        self.pattern, self.coarse_codebooks, self.tokenizer_fitted = pattern, coarse_codebooks, tokenizer_fitted
        self.sources, self.defaults = dict(sources), dict(defaults)
        self.specs = stage_specs(codec.n_codebooks, codec.spec.codebook_size, coarse_codebooks, tokenizer.k, pattern)
        problem = self._fit_problem()
        if problem:
            raise ValueError(problem)

    # --- device ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.stages["semantic"].device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ARPipeline":
        """Move every part to ``device`` and/or cast its floating-point weights to ``dtype``."""
        target = {name: value for name, value in (("device", device), ("dtype", dtype)) if value is not None}
        modules = [self.codec, self.text_encoder, *self.stages.values()]
        if isinstance(self.features, SSLFeatures):
            modules.append(self.features.model)
        for module in modules:
            module.to(**target)
        return self

    @property
    def features_kind(self) -> str:
        """``codec``, or the SSL kind (``hubert`` / ``mert``)."""
        return "codec" if isinstance(self.features, CodecFeatures) else self.features.name

    def trainable_components(self) -> dict[str, torch.nn.Module]:
        """The trained parts by name (the three stages; the codec and text encoder are frozen)."""
        return dict(self.stages)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def default_duration(self) -> float:
        return float(self.defaults["duration"])

    @property
    def semantic_rate(self) -> float:
        return self.features.frame_rate

    # --- tokens --------------------------------------------------------------------------------

    def semantic_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent query ``[B, K·d, L]`` (the codec's pre-snap latents, as the latent cache stores them) → semantic
        tokens ``[B, L]``: the nearest centroid of the first codebooks' channels of every frame (codec features only;
        SSL tokens come from audio, :meth:`vocal_semantic`, or from the cache, ``discodiff tokenize``)."""
        if not isinstance(self.features, CodecFeatures):
            raise GenerationError(f"this model's semantic tokens are {self.features_kind} features of audio, not codec "
                                  "latents: tokenize audio (vocal_semantic) or train on a cache made by `discodiff tokenize`")
        features = latents[:, : self.features.dim].transpose(1, 2).float()
        return self.tokenizer.assign(features).clone()  # a normal tensor (assign runs in inference mode)

    def vocal_semantic(self, vocal: torch.Tensor) -> torch.Tensor:
        """Vocal audio ``[B, 1, T]`` at the codec's rate → its semantic tokens ``[B, Ls]``."""
        if isinstance(self.features, CodecFeatures):
            return self.semantic_tokens(self.codec.encode(vocal, progress=False).to(self.device))
        audio = self.features.resample(vocal, self.codec.sample_rate)
        return self.tokenizer.assign(self.features(audio).to(self.device)).clone()

    # --- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        vocal: str | Path | torch.Tensor | None = None,
        duration: float | None = None,
        generator: Generators = None,
        progress: bool = True,
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        text_guidance: float | None = None,
        vocal_guidance: float | None = None,
        semantic_tokens: torch.Tensor | None = None,
        coarse_codes: torch.Tensor | None = None,
        overlap: float | None = None,
        use_cache: bool = True,
        output_type: str = "np",
    ) -> ARPipelineOutput:
        """Generate accompaniment/music: semantic → coarse → fine → decode.

        Every argument is checked before any model runs (a :class:`GenerationError` naming the valid range); None means
        the model's default. ``prompt``, ``vocal``, ``duration`` and ``generator`` as for every family (a vocal sets
        the length). ``temperature`` > 0, ``top_k`` ≥ 0 (0 = off), ``top_p`` in (0, 1] (1 = off); guidance scales in
        0 … 100 (1 = unguided). ``semantic_tokens [B, Ls]`` skips the semantic stage and ``coarse_codes [B, c, L]``
        also the coarse stage (teacher-forced evaluation of the later stages), both for the whole output.
        ``overlap``: seconds each window of a long output shares with the one before, at least 0 and less than the
        window (None: a quarter of it; see the module docstring). ``use_cache=False`` recomputes every prefix (slow;
        the reference of the KV cache). ``output_type``: ``np`` / ``pt`` audio or ``codes`` only.
        """
        prompts = check_prompts(prompt)
        settings, scales = self._check_arguments(temperature, top_k, top_p, text_guidance, vocal_guidance, output_type)
        windows = {name: self._stage_window(name) for name in STAGES}
        overlaps = {name: overlap_frames(overlap, windows[name], self._stage_rate(name)) for name in STAGES}
        check_duration(duration)
        check_generator(generator, len(prompts))
        batch_size = len(prompts)
        vocal_audio = vocal_batch(vocal, batch_size, self.codec.sample_rate, self.device)
        num_samples = vocal_audio.shape[-1] if vocal_audio is not None else \
            num_output_samples(duration, self.defaults["duration"], self.codec.sample_rate)
        frames = self.codec.frames_for(num_samples)
        semantic_frames = self._semantic_frames(frames)
        self._check_given(semantic_tokens, (batch_size, semantic_frames), "semantic_tokens", self.tokenizer.k)
        self._check_given(coarse_codes, (batch_size, self.coarse_codebooks, frames), "coarse_codes",
                          self.codec.spec.codebook_size)
        if coarse_codes is not None and semantic_tokens is None:
            raise GenerationError("coarse_codes skips the semantic and coarse stages: give semantic_tokens with it")
        plans = {name: plan_windows(semantic_frames if name == "semantic" else frames, windows[name], overlaps[name])
                 for name in STAGES}
        if not self.tokenizer_fitted:
            warnings.warn("the semantic tokenizer is not fitted (an untrained model): output is not meaningful", stacklevel=2)

        text = self.text_encoder(prompts, device=self.device)
        text_pair = (text.sequence, text.mask)
        tokens = StageTokens(codes=None, semantic=semantic_tokens,
                             vocal_semantic=None if vocal_audio is None else self.vocal_semantic(vocal_audio),
                             frame_mask=torch.ones(batch_size, frames, dtype=torch.bool, device=self.device),
                             semantic_mask=torch.ones(batch_size, semantic_frames, dtype=torch.bool, device=self.device),
                             codec_rate=self.codec.frame_rate, semantic_rate=self.semantic_rate)
        with_vocal = [scales[0], scales[1]] if vocal_audio is not None else [scales[0]]

        def run(name: str, conditions: torch.Tensor) -> torch.Tensor:
            stage_scales = with_vocal if self.specs[name].vocal_streams else with_vocal[:1]
            return self._sample_windows(name, plans[name], conditions, text_pair, stage_scales, settings, generator,
                                        use_cache, progress)

        if tokens.semantic is None:
            tokens.semantic = run("semantic", stage_conditions(self.specs["semantic"], tokens))[:, 0]
        else:
            tokens.semantic = tokens.semantic.to(self.device).long()
        if coarse_codes is None:
            coarse_codes = run("coarse", stage_conditions(self.specs["coarse"], tokens))
        coarse_codes = coarse_codes.to(self.device).long()
        fine = run("fine", stage_conditions(self.specs["fine"], tokens, coarse_codes=coarse_codes))
        codes = torch.cat([coarse_codes, fine], dim=1)
        if output_type == "codes":
            return ARPipelineOutput(audios=None, codes=codes, semantic=tokens.semantic, sample_rate=self.sample_rate)
        audio = self.codec.decode_codes(codes, length=num_samples, progress=progress,
                                        chunk_seconds=max(MIN_CHUNK_SECONDS, self.default_duration))
        return ARPipelineOutput(audios=audio.cpu().numpy() if output_type == "np" else audio, codes=codes,
                                semantic=tokens.semantic, sample_rate=self.sample_rate)

    def _semantic_frames(self, frames: int) -> int:
        """Semantic frames covering ``frames`` codec frames (the same count at the same rate; the count the training
        crops have at another rate)."""
        if self.semantic_rate == self.codec.frame_rate:
            return frames
        return max(1, round(frames * self.semantic_rate / self.codec.frame_rate))

    def _stage_rate(self, name: str) -> float:
        """Frames per second of stage ``name``'s target: the semantic rate, or the codec's."""
        return self.semantic_rate if name == "semantic" else self.codec.frame_rate

    def _stage_window(self, name: str) -> int:
        """Frames of one window of stage ``name``: the model's training crop (``default_duration``) at the stage's
        rate, or as many as its ``max_length`` admits when that is fewer. A :class:`GenerationError` when not even one
        frame fits."""
        spec, max_length = self.specs[name], self.stages[name].config.max_length
        crop = self.codec.frames_for(round(self.default_duration * self.sample_rate))
        crop = self._semantic_frames(crop) if name == "semantic" else crop
        one_frame, per_frame = spec.num_steps(1), spec.num_steps(2) - spec.num_steps(1)
        if one_frame > max_length:
            raise GenerationError(f"the {name} stage's max_length={max_length} is less than the {one_frame} steps of one "
                                  f"frame with the {spec.pattern.name} pattern: this model cannot generate; build the "
                                  f"stage with max_length ≥ {one_frame}")
        return min(crop, (max_length - one_frame) // per_frame + 1)

    def _sample_windows(self, name: str, windows: list[Window], conditions: torch.Tensor,
                        text: tuple[torch.Tensor, torch.Tensor], scales: list[float], settings: SamplingSettings,
                        generator: Generators, use_cache: bool, progress: bool) -> torch.Tensor:
        """Stage ``name``'s target ``[B, n_target, frames]`` for the whole take, window by window: each window continues
        the frames already generated in its overlap (the sampler's ``prefix``) with its own span of ``conditions
        [B, C, frames]``, and adds the frames after them."""
        spec = self.specs[name]
        target = conditions.new_empty((conditions.shape[0], spec.n_target, 0))
        many = len(windows) > 1
        for window in tqdm(windows, desc=f"AR {name} windows", unit="window", disable=not (progress and many)):
            prefix = target[..., window.start: window.start + window.known] if window.known else None
            generated = sample_stage(self.stages[name], spec, window.length, conditions[..., window.start: window.stop],
                                     text, scales, settings, generator, use_cache, progress, prefix=prefix)
            target = torch.cat([target, generated[..., window.known:]], dim=-1)
        return target

    def _check_arguments(self, temperature, top_k, top_p, text_guidance, vocal_guidance,
                         output_type: str) -> tuple[SamplingSettings, list[float]]:
        if output_type not in OUTPUT_TYPES:
            raise GenerationError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        values = {name: self.defaults[name] if value is None else value for name, value in
                  (("temperature", temperature), ("top_k", top_k), ("top_p", top_p))}
        try:
            check_types(from_dict(ARSamplingConfig, {**self.defaults, **values}, "sampling", ""), "sampling", "",
                        parse_text=False)
        except ConfigError as err:
            raise GenerationError(str(err).removeprefix("sampling: ") + " (temperature > 0; top_k ≥ 0, 0 = off; "
                                  "top_p in (0, 1], 1 = off)") from None
        if not is_integer(values["top_k"]):
            raise GenerationError(f"top_k={values['top_k']!r}: must be a whole number ≥ 0 (0 = off)")
        scales = [check_scale(name, self.defaults[name] if value is None else value)
                  for name, value in (("text_guidance", text_guidance), ("vocal_guidance", vocal_guidance))]
        return SamplingSettings(float(values["temperature"]), int(values["top_k"]), float(values["top_p"])), scales

    @staticmethod
    def _check_given(tensor, shape: tuple[int, ...], name: str, vocab: int) -> None:
        if tensor is None:
            return
        integer = isinstance(tensor, torch.Tensor) and not (tensor.dtype.is_floating_point or tensor.dtype == torch.bool)
        if not integer or tuple(tensor.shape) != shape:
            got = f"{tuple(tensor.shape)} {tensor.dtype}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise GenerationError(f"{name} must be an integer tensor {list(shape)} for this input, got {got}")
        if tensor.min() < 0 or tensor.max() >= vocab:
            raise GenerationError(f"{name} ids must be in 0 … {vocab - 1}")

    # --- fit of the parts ------------------------------------------------------------------------

    def _fit_problem(self) -> str | None:
        """What does not fit between the stages, the codec, the tokenizer and the text encoder (or None)."""
        for name, spec in self.specs.items():
            config = self.stages[name].config
            expected = {"n_codebooks": spec.model_codebooks, "vocab_size": spec.model_vocab_size,
                        "condition_vocab_sizes": list(spec.condition_vocab_sizes),
                        "context_dim": self.text_encoder.sequence_dim}
            actual = {key: list(config[key]) if key == "condition_vocab_sizes" else config[key] for key in expected}
            wrong = next((key for key in expected if actual[key] != expected[key]), None)
            if wrong:
                return (f"the {name} stage has {wrong}={actual[wrong]!r}, but the codec, tokenizer (k={self.tokenizer.k}), "
                        f"text encoder and pattern {self.pattern!r} need {expected[wrong]!r}")
        if self.tokenizer.dim != self.features.dim:
            return (f"the semantic tokenizer has dim {self.tokenizer.dim}, but the model's {self.features!r} give "
                    f"features of dim {self.features.dim}")
        return None

    # --- persistence ---------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the stages, the tokenizer and the manifest; the codec and text encoder are referenced by id/path
        unless ``bundled`` (then written into ``codec/`` / ``text_encoder/``). Built aside and swapped in
        (:func:`~discodiff.outputs.atomic_directory`); files a user added to an earlier ``directory`` are kept."""
        directory = Path(directory)
        sources = copy.deepcopy(self.sources)
        with atomic_directory(directory) as build:
            save_bundled_encoders(build, sources, self.codec, self.text_encoder)
            if sources.get("semantic_features", {}).get("bundled"):
                self.features.model.save_pretrained(build / FEATURES_DIR)
                preprocessor = {"sampling_rate": self.features.sample_rate, "do_normalize": self.features.normalize}
                (build / FEATURES_DIR / "preprocessor_config.json").write_text(json.dumps(preprocessor))
                sources["semantic_features"]["id"] = FEATURES_DIR
            for name, model in self.stages.items():
                model.save_pretrained(build / name)
            self.tokenizer.save(build / TOKENIZER_FILE)
            carry_over(directory, build, sources, COMPONENTS)
            manifest = {FAMILY_KEY: FAMILY_NAME, "sources": sources, "defaults": self.defaults, "pattern": self.pattern,
                        "coarse_codebooks": self.coarse_codebooks,
                        "tokenizer": self.tokenizer_settings()}
            (build / PIPELINE_FILE).write_text(json.dumps(manifest, indent=1))
        self.sources = sources
        return directory

    def tokenizer_settings(self) -> dict:
        """The tokenizer's manifest entry: ``features`` kind, ``codebooks`` (codec) or ``layer`` (SSL), ``fitted``."""
        settings = {"features": self.features_kind, "fitted": self.tokenizer_fitted}
        if isinstance(self.features, CodecFeatures):
            return {**settings, "codebooks": self.features.codebooks}
        return {**settings, "layer": self.features.layer}

    @classmethod
    def from_pretrained(cls, directory: str | Path, codec: str | None = None, text_encoder: str | None = None,
                        device: torch.device | str | None = None) -> "ARPipeline":
        """Load an AR model directory (every part in float32, in memory); ``codec`` / ``text_encoder`` override the
        referenced id or path. A missing or damaged part is a :class:`ModelDirectoryError` naming it."""
        directory = Path(directory)
        manifest_path = directory / PIPELINE_FILE
        manifest = read_json_object(manifest_path, "the pipeline manifest")
        problem = _manifest_problem(manifest)
        if problem:
            raise ModelDirectoryError(f"{manifest_path}: {problem}; {REPAIR}")
        sources = manifest["sources"]
        codec_module, codec_location, text_module, text_location = load_encoders(directory, sources, codec, text_encoder)
        stages = {name: load_model(ARTransformer, directory / name, f"{name} stage") for name in STAGES}
        try:
            tokenizer = SemanticTokenizer.load(directory / TOKENIZER_FILE)
        except ConfigError as err:
            raise ModelDirectoryError(f"{err}; {REPAIR}") from err
        settings = manifest["tokenizer"]
        try:
            if settings["features"] == "codec":
                features = CodecFeatures(codec_module, settings["codebooks"])
            else:
                location = component_location(directory, "semantic_features", sources["semantic_features"], None)
                features = resolve_ssl_features(settings["features"], location, settings["layer"])
                if inside(location, directory):
                    in_memory(features.model)
            pipeline = cls(codec_module, text_module.float(), tokenizer, features, stages, manifest["pattern"],
                           manifest["coarse_codebooks"], settings["fitted"], sources, manifest["defaults"])
        except (ValueError, ConfigError) as err:
            raise ModelDirectoryError(f"{directory / 'semantic' / MODEL_CONFIG} and the other parts do not fit ({err}): "
                                      f"pass the codec / text encoder the model was made with (--codec, --text-encoder), "
                                      f"or {REPAIR}") from err
        return pipeline.to(device) if device is not None else pipeline


def _manifest_problem(manifest: dict) -> str | None:
    """What is wrong with the structure of an AR ``pipeline.json`` (first problem), or None."""
    missing = [key for key in ("sources", "defaults", "pattern", "coarse_codebooks", "tokenizer") if key not in manifest]
    if missing:
        return f"missing {', '.join(missing)}"
    if manifest.get(FAMILY_KEY) != FAMILY_NAME:
        return f"{FAMILY_KEY} is {manifest.get(FAMILY_KEY)!r}, not {FAMILY_NAME!r}; load it with discodiff.load_pipeline"
    if manifest["pattern"] not in PATTERN_NAMES:
        return f"pattern must be one of {', '.join(PATTERN_NAMES)}, got {manifest['pattern']!r}"
    if not is_integer(manifest["coarse_codebooks"]) or manifest["coarse_codebooks"] < 1:
        return f"coarse_codebooks must be a positive integer, got {manifest['coarse_codebooks']!r}"
    tokenizer = manifest["tokenizer"]
    kind = tokenizer.get("features", "codec") if isinstance(tokenizer, dict) else None
    needed = "codebooks" if kind == "codec" else "layer"
    if not isinstance(tokenizer, dict) or kind not in FEATURE_KINDS or not is_integer(tokenizer.get(needed)) or \
            not isinstance(tokenizer.get("fitted"), bool):
        return (f"tokenizer must be an object with features ({', '.join(FEATURE_KINDS)}), codebooks (codec) or layer "
                f"(SSL) as an integer, and fitted (true/false), got {tokenizer!r}")
    tokenizer.setdefault("features", "codec")
    if kind != "codec" and not isinstance(manifest["sources"], dict) or \
            kind != "codec" and not isinstance(manifest["sources"].get("semantic_features"), dict):
        return "sources.semantic_features (the SSL model's id and bundled flag) is missing"
    sources = manifest["sources"]
    if not isinstance(sources, dict):
        return f"sources must be an object with codec and text_encoder, got {sources!r}"
    sections = [(f"sources.{name}", schema, sources.get(name)) for name, schema in
                (("codec", CodecConfig), ("text_encoder", TextEncoderConfig))] + \
        [("defaults", ARSamplingConfig, manifest["defaults"])]
    return sections_problem(sections, PIPELINE_FILE)
