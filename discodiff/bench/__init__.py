"""Benchmarks runnable as ``python -m discodiff.bench.<name>``."""

from __future__ import annotations

import json
from pathlib import Path


def write_json_record(path: str | Path, record: dict) -> None:
    """Write a bench's ``record`` as JSON to ``path`` atomically (NaN refused) and say so."""
    from ..outputs import atomic_file

    with atomic_file(Path(path)) as temporary:
        temporary.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")
