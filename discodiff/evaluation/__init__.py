"""The evaluation package: measures of trained models on held-in or held-out data.

For now the reconstruction measures of a codec (:mod:`.reconstruction`): multi-scale mel distance, SI-SDR, pitch
fidelity of vocals, chroma similarity of accompaniment, codebook usage and CPU real-time factors, run over a set
of (vocals, accompaniment) clips by :func:`~.reconstruction.evaluate_codec`
(``python -m discodiff.bench.codec_quality`` runs it on a rendered corpus).
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

__all__ = ["CodecReport", "PitchAgreement", "chroma_similarity", "evaluate_codec", "mel_distance", "pitch_agreement",
           "si_sdr_db"]
