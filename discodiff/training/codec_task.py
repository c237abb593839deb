"""The codec family's training task: a DAC codec (``transformers.DacModel``) trained with DAC's own recipe.

Its ``task:`` section (:class:`CodecTaskConfig`)::

    task:
      clip_seconds: 0.5          # per item, rounded down to a multiple of the codec's hop
      weights: {mel: 15.0, waveform_l1: 1.0, commitment: 0.25, codebook: 1.0, adversarial: 1.0, feature: 2.0}
      mel: {n_mels: [5, 10, 20, 40, 80, 160, 320], window_lengths: [32, 64, 128, 256, 512, 1024, 2048],
            pow: 1.0, clamp_eps: 1.0e-5, mag_weight: 0.0, log_weight: 1.0}
      weight_norm: true          # train with DAC's weight norm (folded into plain weights on export)
      compile_snake: false       # Snake through torch.compile (training/snake.py): ~1.8x faster steps on the CPU
      gan: {enabled: false, periods: [2, 3, 5, 7, 11], rates: [], fft_sizes: [2048, 1024, 512],
            learning_rate_scale: 1.0, max_grad_norm: 10.0}     # DAC's discriminators (training/codec_gan.py)
      dead_codes: {restart_every: 50, decay: 0.99, threshold: 0.01}   # 0: off

**Loss** per sample (DAC's ``lambdas``; the last two terms with ``gan.enabled`` only)::

    15 · mel + 1 · |x̂ − x|₁ + 0.25 · commitment + 1 · codebook + 1 · adversarial + 2 · feature

With ``gan.enabled`` the task has an adversary (:mod:`.adversary`): DAC's discriminators (:mod:`.codec_gan`), trained
by their own AdamW and clipped at 10 as DAC does. Each batch first steps the discriminator on the detached
reconstruction and the clip, then the codec on the loss above through the updated discriminator (DAC's order).

``mel`` is ``dac.nn.loss.MelSpectrogramLoss`` with DAC's settings (mel fmin 0, fmax Nyquist) and an L1 that reduces
each sample separately (:class:`PerSampleL1`; its batch mean is the stock loss), the waveform L1 is
``dac.nn.loss.L1Loss`` reduced the same way (DAC computes it but gives it no weight; ``weights.waveform_l1=0`` is
DAC exactly). The VQ losses are DAC's per-sample commitment and codebook losses summed over the codebooks a sample
uses: :class:`CodecAutoencoder` runs the ``DacModel``'s own encoder, quantisers and decoder (the weights it trains
are the saved ones) but computes the VQ losses per sample as ``dac.nn.quantize`` does — ``transformers``' quantiser
averages them over the whole batch before masking the dropped codebooks, and draws quantizer dropout from the
global RNG. Quantizer dropout (the model config's ``quantizer_dropout``, DAC's 0.5: that share of each batch is
quantised with 1…K codebooks, uniformly) is drawn from the loop's checkpointed generator, so resumption is exact.

**Dead-code restarts** (SoundStream / EnCodec; not in DAC's recipe, added because a probe on this corpus collapsed
to a few codes per codebook within a few hundred steps without them): each codebook keeps an exponential moving
average (``dead_codes.decay``, bias-corrected: it starts at 0) of how often each entry is chosen per training step,
as a buffer of the module (so checkpoints and resumption carry it). Every ``dead_codes.restart_every`` training steps, entries whose average is
below ``dead_codes.threshold`` are replaced by projected latents of the current batch drawn with the run's
generator, before that codebook quantises the batch. Restarts run on one process for now: a broadcast of process 0's
replacements inside the DDP forward hung the two-process CPU test, so a multi-process run with restarts is refused
at its first step (set ``task.dead_codes.restart_every=0`` there).

**Data**: :class:`~.codec_data.StemClips` (``data.dataset``), train-split clips for training and fixed crops of
validation-split tracks (from ``data.validation_dir``, else from ``data.data_dir``) for validation; see
:mod:`.codec_data` for what is refused. ``data.crop_frames`` is not used (``task.clip_seconds`` sets the clip).
``RUN/codec_data.json`` records the tracks; a resumed run refuses data whose tracks changed.

**Validation** (EMA weights, every codebook) reports the weighted loss and its parts, SI-SDR in dB, the per-codebook
perplexity and share of entries used over all validation frames (:class:`~discodiff.codec.usage.CodebookUsage`)
and the variance of the encoder output, over all frames and within clips over time — a collapsed codec (every
frame one code, a constant encoder output) still lowers the mel loss, but not these. **Samples** are the
reconstructions of the first validation clips, the **reference** the clips. **Export** writes the EMA weights as a
codec model directory (:meth:`~discodiff.codec.family.CodecPipeline.save_pretrained`) that
``DacCodec.from_pretrained`` and :func:`discodiff.load_pipeline` load.

DAC's losses come from the original ``dac`` package (``pip install 'discodiff[dac]'``; on CPU torch
``bash scripts/install.sh --descript``); without it the task refuses to start in one line.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Subset

from discodiff.codec.family import CodecModelConfig, CodecPipeline, build_codec
from discodiff.codec.usage import CodebookUsage
from discodiff.configuration import bounded
from discodiff.errors import ConfigError, DataError, MissingExtraError, TrainingError
from discodiff.outputs import atomic_file

from .adversary import Adversary, AdversarySpec
from .codec_gan import GanSection, build_discriminator, discriminator_loss, generator_losses
from .config import DataSection, TrainConfig
from .data import TrainingData, build_dataset, check_batch_keys, check_data, data_directories, import_object
from .snake import compile_snakes
from .task import TaskConfig, TaskSamples, TrainingTask

DATA_FILE = "codec_data.json"
DEFAULT_DATASET = "discodiff.training.codec_data:StemClips"
DAC_INSTALL = "pip install 'discodiff[dac]' (on CPU-only torch: bash scripts/install.sh --descript)"


def require_dac():
    """``dac.nn.loss`` (DAC's losses), or a :class:`MissingExtraError` naming how to install ``dac`` / ``audiotools``."""
    try:
        import audiotools  # noqa: F401
        from dac.nn import loss
    except ImportError as err:
        raise MissingExtraError(f"training the codec needs DAC's losses from the 'dac' and 'audiotools' packages "
                                f"({err.name or 'dac'} is missing): {DAC_INSTALL}") from err
    return loss


# --- the task section ----------------------------------------------------------------------------


@dataclass
class LossWeights:
    """DAC's loss weights (``lambdas`` of its recipe), plus the waveform L1 DAC computes but does not weight;
    ``adversarial`` and ``feature`` (DAC's ``adv/gen_loss``, ``adv/feat_loss``) apply with ``gan.enabled`` only."""

    mel: float = bounded(15.0, low=0.0)
    waveform_l1: float = bounded(1.0, low=0.0)
    commitment: float = bounded(0.25, low=0.0)
    codebook: float = bounded(1.0, low=0.0)
    adversarial: float = bounded(1.0, low=0.0)
    feature: float = bounded(2.0, low=0.0)


@dataclass
class MelLossSection:
    """``dac.nn.loss.MelSpectrogramLoss`` settings (DAC's; mel fmin 0 and fmax the Nyquist frequency at every scale).
    Window ``w`` hops by ``w // 4``."""

    n_mels: list[int] = bounded(default_factory=lambda: [5, 10, 20, 40, 80, 160, 320], low=1, high=1024)
    window_lengths: list[int] = bounded(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048], low=4, high=65536)
    pow: float = bounded(1.0, low=0.0, low_open=True)
    clamp_eps: float = bounded(1e-5, low=0.0, low_open=True)
    mag_weight: float = bounded(0.0, low=0.0)
    log_weight: float = bounded(1.0, low=0.0)


@dataclass
class DeadCodeSection:
    """Dead-code restarts (see the module docstring); ``restart_every: 0`` turns them off."""

    restart_every: int = bounded(50, low=0)
    decay: float = bounded(0.99, low=0.0, high=1.0, high_open=True)
    threshold: float = bounded(0.01, low=0.0)


@dataclass
class CodecTaskConfig(TaskConfig):
    """The ``task:`` section of a codec run (see the module docstring). ``compile_snake`` may change on resume (it
    changes float32 rounding, not the computation)."""

    resumable_keys: ClassVar[tuple[str, ...]] = ("compile_snake",)

    clip_seconds: float = bounded(0.5, low=0.0, high=60.0, low_open=True)
    weights: LossWeights = field(default_factory=LossWeights)
    mel: MelLossSection = field(default_factory=MelLossSection)
    weight_norm: bool = True
    compile_snake: bool = False
    gan: GanSection = field(default_factory=GanSection)
    dead_codes: DeadCodeSection = field(default_factory=DeadCodeSection)

    def check(self, where: str) -> None:
        self.gan.check(where)
        if not self.mel.n_mels or len(self.mel.n_mels) != len(self.mel.window_lengths):
            raise ConfigError(f"{where}: task.mel.n_mels ({self.mel.n_mels}) and task.mel.window_lengths "
                              f"({self.mel.window_lengths}) must list one value per scale, at least one scale")


def clip_samples(clip_seconds: float, sample_rate: int, hop_length: int, where: str = "task.clip_seconds") -> int:
    """``clip_seconds`` in samples, rounded down to a multiple of ``hop_length`` (at least one hop)."""
    samples = math.floor(clip_seconds * sample_rate / hop_length) * hop_length
    if samples < hop_length:
        raise ConfigError(f"{where}={clip_seconds:g}: shorter than one codec frame ({hop_length} samples = "
                          f"{hop_length / sample_rate:.4f} s at {sample_rate} Hz); give at least {hop_length / sample_rate:.4f}")
    return samples


# --- the model in training -----------------------------------------------------------------------


class CodecForward(NamedTuple):
    """What :class:`CodecAutoencoder` returns: ``audio [B, 1, T]``, per-sample ``commitment`` / ``codebook`` losses
    ``[B]`` (summed over the codebooks each sample uses), ``codes [B, K, L]`` and the encoder output ``latents [B, H, L]``."""

    audio: torch.Tensor
    commitment: torch.Tensor
    codebook: torch.Tensor
    codes: torch.Tensor
    latents: torch.Tensor


class CodecAutoencoder(nn.Module):
    """The trainable module: a ``transformers.DacModel`` (``self.dac``, its parameters in their order) run as
    ``dac.DAC`` trains — encode, residual VQ of ``n_quantizers[b]`` codebooks per sample (straight-through), decode —
    with DAC's per-sample VQ losses. ``n_quantizers=None`` uses every codebook (what the codec does once exported)."""

    def __init__(self, dac: nn.Module, dead_codes: DeadCodeSection | None = None):
        super().__init__()
        self.dac = dac
        self.dead_codes = dead_codes or DeadCodeSection(restart_every=0)
        quantizers = dac.quantizer.quantizers
        self.register_buffer("code_usage", torch.zeros(len(quantizers), quantizers[0].codebook.num_embeddings))
        self.register_buffer("training_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("restarted_codes", torch.zeros((), dtype=torch.long))

    def forward(self, audio: torch.Tensor, n_quantizers: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> CodecForward:
        """In training mode with a ``generator``, also tracks code usage and restarts dead codes when due."""
        restarting = self.training and generator is not None and self.dead_codes.restart_every > 0
        if restarting:
            self._check_single_process()
            self.training_steps += 1
            due = int(self.training_steps) % self.dead_codes.restart_every == 0
        z = self.dac.encoder(audio)
        batch = audio.shape[0]
        if n_quantizers is None:
            n_quantizers = torch.full((batch,), len(self.dac.quantizer.quantizers), device=audio.device)
        quantized, residual = torch.zeros_like(z), z
        commitment = codebook = z.new_zeros(batch)
        codes = []
        for i, quantizer in enumerate(self.dac.quantizer.quantizers):
            z_e = quantizer.in_proj(residual)
            if restarting and due:
                self._restart_dead_codes(i, quantizer.codebook.weight, z_e, generator)
            z_q, indices = quantizer.decode_latents(z_e)
            if restarting:
                self._track_usage(i, indices)
            commitment_i = F.mse_loss(z_e, z_q.detach(), reduction="none").mean(dim=(1, 2))
            codebook_i = F.mse_loss(z_q, z_e.detach(), reduction="none").mean(dim=(1, 2))
            z_q = quantizer.out_proj(z_e + (z_q - z_e).detach())  # straight-through
            mask = (i < n_quantizers).to(z.dtype)
            quantized = quantized + z_q * mask[:, None, None]
            residual = residual - z_q
            commitment = commitment + commitment_i * mask
            codebook = codebook + codebook_i * mask
            codes.append(indices)
        decoded = self.dac.decoder(quantized)[..., : audio.shape[-1]]
        return CodecForward(decoded, commitment, codebook, torch.stack(codes, dim=1), z)

    @staticmethod
    def _check_single_process() -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            raise TrainingError("dead-code restarts run on one process only (each process would restart other codes); "
                                "set task.dead_codes.restart_every=0 for a multi-process codec run")

    @torch.no_grad()
    def _track_usage(self, index: int, indices: torch.Tensor) -> None:
        """Fold this step's counts of codebook ``index`` (``indices [B, L]``) into its moving average."""
        counts = torch.bincount(indices.reshape(-1), minlength=self.code_usage.shape[1]).to(self.code_usage.dtype)
        decay = self.dead_codes.decay
        self.code_usage[index].mul_(decay).add_(counts, alpha=1 - decay)

    @torch.no_grad()
    def _restart_dead_codes(self, index: int, codebook: torch.Tensor, z_e: torch.Tensor, generator: torch.Generator) -> None:
        """Replace the entries of ``codebook [N, d]`` used less than the threshold by projected latents ``z_e [B, d, L]``
        of this batch (drawn with ``generator``), before the codebook is used, so autograd sees the new values."""
        steps = int(self.training_steps) - 1  # steps folded into the averages so far
        if steps < 1:
            return
        usage = self.code_usage[index] / (1 - self.dead_codes.decay ** steps)  # bias-corrected (the average starts at 0)
        dead = (usage < self.dead_codes.threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        candidates = z_e.detach().transpose(1, 2).reshape(-1, z_e.shape[1])
        picks = torch.randint(0, candidates.shape[0], (dead.numel(),), generator=generator).to(candidates.device)
        codebook[dead] = candidates[picks].to(codebook.dtype)
        self.code_usage[index, dead] = self.dead_codes.threshold * (1 - self.dead_codes.decay ** steps)  # a fresh chance
        self.restarted_codes += dead.numel()


def decoder_input_share(dac: nn.Module, out: CodecForward) -> torch.Tensor:
    """``[B]``: energy of ``out.audio`` minus what the decoder plays from an all-zero input, over ``out.audio``'s
    energy (about 1 or more when the output follows the codes, near 0 when it is a fixed pattern)."""
    idle = dac.decoder(torch.zeros_like(out.latents))[..., : out.audio.shape[-1]]
    energy = out.audio.double().square().mean(dim=(1, 2)).clamp_min(1e-20)
    return (out.audio - idle).double().square().mean(dim=(1, 2)) / energy


class PerSampleL1(nn.Module):
    """``dac.nn.loss.L1Loss(reduction="none")`` averaged over every dimension but the batch: ``[B]``. Its batch mean is
    the stock (``reduction="mean"``) loss, since every sample has the same shape."""

    def __init__(self, attribute: str = "audio_data"):
        super().__init__()
        self.l1 = require_dac().L1Loss(attribute=attribute, reduction="none")

    def forward(self, x, y) -> torch.Tensor:
        return self.l1(x, y).flatten(1).mean(dim=1)


def mel_loss(settings: MelLossSection, loss_fn: nn.Module | None = None) -> nn.Module:
    """``dac.nn.loss.MelSpectrogramLoss`` with ``settings`` (mel fmin 0, fmax None at every scale); with
    :class:`PerSampleL1` as ``loss_fn`` it returns ``[B]``, with None the stock scalar."""
    loss = require_dac()
    scales = len(settings.n_mels)
    options = {} if loss_fn is None else {"loss_fn": loss_fn}
    return loss.MelSpectrogramLoss(n_mels=list(settings.n_mels), window_lengths=list(settings.window_lengths),
                                   mel_fmin=[0.0] * scales, mel_fmax=[None] * scales, pow=settings.pow,
                                   clamp_eps=settings.clamp_eps, mag_weight=settings.mag_weight,
                                   log_weight=settings.log_weight, **options)


class CodecLosses(nn.Module):
    """DAC's reconstruction losses per sample (``[B]``) on ``x̂`` (the codec's output) and ``x`` (the clip)."""

    def __init__(self, settings: CodecTaskConfig, sample_rate: int):
        super().__init__()
        loss = require_dac()
        self.sample_rate, self.weights = sample_rate, settings.weights
        self.mel = mel_loss(settings.mel, PerSampleL1())
        self.waveform = PerSampleL1()
        self.sisdr = loss.SISDRLoss(reduction="none")

    def signals(self, estimate: torch.Tensor, reference: torch.Tensor):
        from audiotools import AudioSignal

        return AudioSignal(estimate.float(), self.sample_rate), AudioSignal(reference.float(), self.sample_rate)

    def parts(self, out: CodecForward, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"mel", "waveform_l1", "commitment", "codebook", "loss"}`` per sample (``loss`` weighted)."""
        estimate, target = self.signals(out.audio, reference)
        weights = self.weights
        with warnings.catch_warnings():  # audiotools notes every change of STFT size, i.e. every scale
            warnings.filterwarnings("ignore", message="stft_data changed shape")
            mel = self.mel(estimate, target)
        parts = {"mel": mel, "commitment": out.commitment.float(), "codebook": out.codebook.float()}
        parts["waveform_l1"] = self.waveform(estimate, target)
        parts["loss"] = (weights.mel * parts["mel"] + weights.commitment * parts["commitment"]
                         + weights.codebook * parts["codebook"])
        if weights.waveform_l1:
            parts["loss"] = parts["loss"] + weights.waveform_l1 * parts["waveform_l1"]
        return parts

    def sisdr_db(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """SI-SDR of ``estimate`` against ``reference`` in dB, per sample ``[B]`` (``SISDRLoss`` is its negative)."""
        reference_signal, estimate_signal = self.signals(reference, estimate)
        return -self.sisdr(reference_signal, estimate_signal).reshape(-1)


# --- the task ------------------------------------------------------------------------------------


class CodecTask(TrainingTask):
    """Trains a codec of the ``codec`` family (see the module docstring)."""

    config_class = CodecTaskConfig
    batch_keys = ("audio",)
    run_files = (DATA_FILE,)
    data_hint = ("a folder of rendered tracks at any depth (`discodiff render-corpus`: <track>/vocals.wav, "
                 "accompaniment.wav, mixture.wav, metadata.json)")

    def __init__(self, config: TrainConfig, task_config: CodecTaskConfig, seed: int):
        super().__init__(config, task_config, seed)
        require_dac()
        if config.model.init_from:
            self.pipeline = CodecPipeline.load_trainable(config.model.init_from)
        else:
            self.pipeline = build_codec(CodecModelConfig.from_yaml(config.model.config, config.model.overrides), seed)
        model_config = self.pipeline.config
        self.clip_samples = clip_samples(task_config.clip_seconds, model_config.sampling_rate, model_config.hop_length)
        self.quantizer_dropout = float(model_config.quantizer_dropout)
        if task_config.weight_norm:
            self.pipeline.model.apply_weight_norm()
        if task_config.compile_snake:
            compile_snakes(self.pipeline.model)
        self.autoencoder = CodecAutoencoder(self.pipeline.model, task_config.dead_codes)
        self.losses = CodecLosses(task_config, model_config.sampling_rate)
        self.discriminator = build_discriminator(task_config.gan, model_config.sampling_rate) \
            if task_config.gan.enabled else None
        self.tracks: dict[str, list[str]] | None = None

    @classmethod
    def check(cls, config: TrainConfig) -> None:
        """``dac`` is installed, the data dirs exist and hold only usable rendered tracks (reads their metadata only),
        and (for a model from its config) the clip holds at least one codec frame."""
        from .codec_data import scan_tracks

        require_dac()
        check_data(config.data, cls.data_hint)
        if not config.model.init_from:
            model = CodecModelConfig.from_yaml(config.model.config, config.model.overrides)
            clip_samples(config.task.clip_seconds, model.sampling_rate, model.hop_length)
        for _, directory in data_directories(config.data):
            scan_tracks(directory)

    # --- the model and its data ----------------------------------------------------------------

    @property
    def module(self) -> CodecAutoencoder:
        return self.autoencoder

    @property
    def adversary(self) -> AdversarySpec | None:
        """DAC's discriminator with ``gan.enabled`` (its learning rate ``gan.learning_rate_scale`` × the codec's)."""
        if self.discriminator is None:
            return None
        gan = self.settings.gan
        return AdversarySpec(self.discriminator, gan.learning_rate_scale * self.config.optimizer.learning_rate,
                             gan.max_grad_norm)

    @property
    def name(self) -> str:
        return "codec"

    @property
    def length_multiple(self) -> int:
        return self.pipeline.hop_length

    @property
    def sample_rate(self) -> int:
        return self.pipeline.sample_rate

    def training_data(self, data: DataSection, num_validation_items: int) -> TrainingData:
        """Train-split clips of ``data.data_dir``; the first ``num_validation_items`` fixed validation-split clips of
        ``data.validation_dir`` (else of ``data.data_dir``)."""
        check_data(data, self.data_hint)
        train = self._dataset(data, "data.data_dir", data.data_dir, "train")
        if data.validation_dir:
            validation = self._dataset(data, "data.validation_dir", data.validation_dir, "validation")
        else:
            validation = self._dataset(data, "data.data_dir", data.data_dir, "validation")
        self.tracks = {"train": list(train.track_ids), "validation": list(validation.track_ids)}
        collate_fn = import_object(data.collate, "data.collate") if data.collate else None
        return TrainingData(train, Subset(validation, range(min(num_validation_items, len(validation)))), collate_fn)

    def _dataset(self, data: DataSection, key: str, directory: str, split: str):
        dataset_class = import_object(data.dataset, "data.dataset")
        return build_dataset(dataset_class, data, key, directory, clip_samples=self.clip_samples, split=split,
                             sample_rate=self.sample_rate, seed=self.seed)

    # --- one step --------------------------------------------------------------------------------

    def prepare(self, batch: dict, device: torch.device) -> torch.Tensor:
        """``batch["audio"]`` ``[B, 1, T]`` (``T`` a multiple of the hop) on ``device``, float32."""
        check_batch_keys(batch, self.batch_keys, "the codec task")
        audio = batch["audio"]
        hop = self.pipeline.hop_length
        if audio.ndim != 3 or audio.shape[1] != 1 or audio.shape[-1] == 0 or audio.shape[-1] % hop:
            raise DataError(f"the codec task needs batch['audio'] as float32 [B, 1, T] with T a multiple of the hop "
                            f"({hop}), got {tuple(audio.shape)}")
        return audio.to(device, torch.float32)

    def quantizer_counts(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Codebooks each sample is quantised with: all, except for the first ``quantizer_dropout`` share of the batch,
        which gets 1…K uniformly (DAC's quantizer dropout), drawn from ``generator``."""
        n_codebooks = len(self.autoencoder.dac.quantizer.quantizers)
        counts = torch.full((batch_size,), n_codebooks, dtype=torch.long)
        dropped = int(batch_size * self.quantizer_dropout)
        if dropped:
            counts[:dropped] = torch.randint(1, n_codebooks + 1, (dropped,), generator=generator)
        return counts

    def loss(self, model: nn.Module, prepared: torch.Tensor, generator: torch.Generator,
             adversary: Adversary | None = None) -> tuple[torch.Tensor, None]:
        """The weighted loss per sample; with an ``adversary`` (``gan.enabled``) it first steps the discriminator on
        this batch, then adds the adversarial and feature-matching terms through it."""
        counts = self.quantizer_counts(prepared.shape[0], generator).to(prepared.device)
        out = model(prepared, counts, generator)
        loss = self.losses.parts(out, prepared)["loss"]
        if adversary is None:
            return loss, None
        fake = out.audio
        adversary.update(lambda critic: discriminator_loss(critic(fake.detach()), critic(prepared)).mean())
        with adversary.frozen() as critic:
            with torch.no_grad():
                real = critic(prepared)
            adversarial, feature = generator_losses(critic(fake), real)
        weights = self.settings.weights
        return loss + weights.adversarial * adversarial + weights.feature * feature, None

    # --- reports -----------------------------------------------------------------------------------

    @torch.no_grad()
    def validation_metrics(self, accelerator: Accelerator, model: nn.Module, loader: DataLoader, seed: int) -> dict[str, float]:
        """Every codebook (no dropout): the loss and its parts, SI-SDR (dB), codebook usage over all frames and the
        encoder output's variance (per channel over every frame, averaged over channels; and within each clip over
        time, averaged over clips and channels), and ``decoder_input_share``: the share of the output's energy that
        changes when the decoder's input is replaced by zeros (near 0: the decoder ignores the codes and plays a fixed
        pattern, the collapse a falling mel loss hides)."""
        dac = accelerator.unwrap_model(model).dac
        quantizers = dac.quantizer.quantizers
        usage = CodebookUsage.empty(len(quantizers), quantizers[0].codebook.num_embeddings)
        values: dict[str, list[torch.Tensor]] = {}
        sums = squares = None
        frames = 0
        for batch in loader:
            audio = self.prepare(batch, accelerator.device)
            out = model(audio)
            parts = self.losses.parts(out, audio)
            parts["sisdr_db"] = self.losses.sisdr_db(out.audio, audio)
            z = out.latents.double()
            parts["encoder_time_variance"] = z.var(dim=-1).mean(dim=1)
            parts["decoder_input_share"] = decoder_input_share(dac, out)
            for name, value in parts.items():
                values.setdefault(name, []).append(accelerator.gather_for_metrics(value.float()))
            usage.update(accelerator.gather_for_metrics(out.codes))
            batch_sums = accelerator.gather_for_metrics(z.sum(dim=-1)).sum(dim=0)
            batch_squares = accelerator.gather_for_metrics(z.square().sum(dim=-1)).sum(dim=0)
            sums = batch_sums if sums is None else sums + batch_sums
            squares = batch_squares if squares is None else squares + batch_squares
            frames += accelerator.gather_for_metrics(torch.full((audio.shape[0],), z.shape[-1], device=z.device)).sum().item()
        if not values:
            return {}
        metrics = {f"val/{name}": torch.cat(value).mean().item() for name, value in values.items()}
        mean = sums / frames
        metrics["val/encoder_variance"] = (squares / frames - mean.square()).clamp_min(0).mean().item()
        metrics.update(usage.metrics("val/codebook"))
        metrics["val/restarted_codes"] = float(accelerator.unwrap_model(model).restarted_codes)  # all codebooks, since step 0
        return metrics

    @torch.no_grad()
    def samples(self, accelerator: Accelerator, model: nn.Module, batch: dict, step: int) -> TaskSamples:
        """The codec's reconstructions (every codebook) of the first validation clips."""
        audio = self.prepare(batch, accelerator.device)
        out = accelerator.unwrap_model(model)(audio)
        return TaskSamples(out.audio.float().clamp(-1, 1).cpu(), self.sample_rate, list(batch["captions"]))

    def reference(self, batch: dict) -> TaskSamples:
        return TaskSamples(batch["audio"].float(), self.sample_rate, list(batch["captions"]))

    # --- the run directory and export ------------------------------------------------------------

    def _data_record(self) -> dict:
        return {"clip_samples": self.clip_samples, "sample_rate": self.sample_rate, "tracks": self.tracks}

    def write_run_files(self, run_dir: Path) -> None:
        with atomic_file(Path(run_dir) / DATA_FILE) as temporary:
            temporary.write_text(json.dumps(self._data_record(), indent=1) + "\n", encoding="utf-8")

    def check_resume(self, run_dir: Path) -> None:
        """A resumed run must read the tracks it started with (a new render under data.data_dir changes the epochs)."""
        path = Path(run_dir) / DATA_FILE
        if not path.is_file() or self.tracks is None:
            return
        saved = json.loads(path.read_text(encoding="utf-8"))
        for split in ("train", "validation"):
            before, now = set(saved.get("tracks", {}).get(split, [])), set(self.tracks[split])
            if before != now:
                added, removed = sorted(now - before), sorted(before - now)
                example = (added or removed)[0]
                raise TrainingError(f"--resume: the {split} tracks differ from the run's ({path}): {len(added)} added, "
                                    f"{len(removed)} removed (e.g. {example}); resume on the data the run started "
                                    "with, or train into a new output_dir (model.init_from=<an export> to continue from it)")

    def export(self, checkpoint_dir: Path, out_dir: Path) -> Path:
        """The EMA weights (already in :attr:`module`) as a codec model directory, weight norm folded in."""
        return CodecPipeline(self.pipeline.model, self.pipeline.config).save_pretrained(out_dir)
