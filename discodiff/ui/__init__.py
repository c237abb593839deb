"""The web studio (``discodiff studio``, the ``ui`` extra): accompaniments for a vocal take, in the browser."""

from .studio import (
    MAX_STUDIO_CANDIDATES,
    CandidateFiles,
    StudioRequest,
    StudioResult,
    build_studio,
    launch_studio,
    run_studio,
)

__all__ = ["MAX_STUDIO_CANDIDATES", "CandidateFiles", "StudioRequest", "StudioResult", "build_studio", "launch_studio",
           "run_studio"]
