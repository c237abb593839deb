"""The evaluation package: measures of trained models on held-in or held-out data.

The reconstruction measures of a codec (:mod:`.reconstruction`): multi-scale mel distance, SI-SDR, pitch
fidelity of vocals, chroma similarity of accompaniment, codebook usage and CPU real-time factors, run over a set
of (vocals, accompaniment) clips by :func:`~.reconstruction.evaluate_codec`
(``python -m discodiff.bench.codec_quality`` runs it on a rendered corpus).

How well an accompaniment fits a vocal (:mod:`.vocal_fit`): harmonic agreement (chroma in the vocal's pitch class),
harmonic consonance (chroma in pitch classes consonant with it) and rhythmic agreement (onset correlation), and the
paired comparison of accompaniments scored with their own vocal and with a mismatched one
(``python -m discodiff.bench.vocal_fit`` runs it on a rendered corpus and on generated accompaniments).
"""

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

__all__ = ["AccompanimentFeatures", "CodecReport", "PairedComparison", "PairingError", "PitchAgreement",
           "VocalFeatures", "VocalFit", "accompaniment_features", "chroma_similarity", "evaluate_codec",
           "fit_from_features", "harmonic_agreement", "harmonic_consonance", "mel_distance", "mismatched_pairs",
           "paired_comparison", "pitch_agreement", "rhythmic_agreement", "si_sdr_db", "vocal_features", "vocal_fit"]
