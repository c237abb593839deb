"""One error type per library domain, all under :class:`DiscoDiffError`.

Every message names the bad input and how to fix it, in one line, so the command line can print it as
is (``discodiff.cli.errors.reports_errors``). Each type also derives from the built-in exception that
describes it (``ValueError`` for bad values, ``OSError`` for missing files or weights), so callers that
catch built-ins keep working.
"""

from __future__ import annotations


class DiscoDiffError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigError(DiscoDiffError, ValueError):
    """A config file, override or option value is malformed or out of range."""


class AudioError(DiscoDiffError, ValueError):
    """An audio input is unusable (missing, corrupt, empty, non-finite, too short)."""


class CodecError(DiscoDiffError, ValueError):
    """A codec cannot be loaded or was given input of the wrong shape."""


class ConditioningError(DiscoDiffError, ValueError):
    """A text or vocal conditioner cannot be loaded or used."""


class ModelDirectoryError(DiscoDiffError, OSError):
    """A model directory is missing, incomplete or damaged."""


class GenerationError(DiscoDiffError, ValueError):
    """A sampling call got arguments it cannot honour (steps, duration, guidance, shapes)."""


class DataError(DiscoDiffError, ValueError):
    """Training data (stems, scores, captions, a latent cache) is missing or inconsistent."""


class TrainingError(DiscoDiffError, ValueError):
    """A training run cannot start or resume as asked."""


class OutputError(DiscoDiffError, OSError):
    """An output location is unusable: not writable, wrong kind, wrong suffix, not enough room."""


class ExistingWorkError(OutputError):
    """An output location holds earlier work that would be replaced; the message names the flag that allows it."""


class EndpointError(DiscoDiffError, OSError):
    """A remote model endpoint (OpenAI-compatible) failed, refused the request or answered something unusable."""


class MissingExtraError(DiscoDiffError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require_module(module: str, extra: str, purpose: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'discodiff[extra]'``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{purpose} needs the '{module}' package ({err.name or module} is missing): "
                                f"pip install 'discodiff[{extra}]'") from err


def first_line(err: BaseException) -> str:
    """``Type: message`` on one line, cut to 200 characters (library messages run long), for wrapping an error."""
    line = " ".join(part.strip() for part in str(err).split("\n") if part.strip())
    return f"{type(err).__name__}: {line if len(line) <= 200 else line[:199] + '…'}"


def is_integer(value) -> bool:
    """A whole number that is not a bool (``True`` is an int in Python)."""
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number that is not a bool."""
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool)
