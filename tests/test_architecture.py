"""The layering rules of docs/architecture.md, checked on the source: every import (top-level or inside a
function) of every module is parsed, and a module may only import the layers its own layer is allowed to."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "discodiff"

# Foundations may import only the parts listed; every other layer may import anything but the parts listed.
ENTRY_POINTS = {"training", "cli", "bench", "evaluation", "ui"}
ONLY = {
    "errors": set(),
    "outputs": {"errors"},
    "configuration": {"errors"},
    "audio": {"errors", "outputs"},
    "guidance": {"errors"},
    "pipeline_utils": {"errors", "configuration"},
    "spectrogram": {"outputs"},
    "model_files": {"errors", "configuration"},
    "call_inputs": {"errors", "audio"},
    "long_form": {"errors"},
}
FORBIDDEN = {
    "codec": ENTRY_POINTS | {"models", "diffusion", "pipeline", "build", "data", "corpus", "conditioning"},
    "latents": ENTRY_POINTS | {"models", "diffusion", "pipeline", "build", "data", "corpus", "conditioning", "codec"},
    "models": ENTRY_POINTS | {"diffusion", "pipeline", "build", "data", "corpus", "codec", "conditioning"},
    "diffusion": ENTRY_POINTS | {"pipeline", "build", "data", "corpus", "models", "codec", "conditioning"},
    "conditioning": ENTRY_POINTS | {"pipeline", "build", "data", "corpus", "diffusion"},
    "corpus": ENTRY_POINTS | {"pipeline", "build", "models", "diffusion", "conditioning"},  # writes the stem layout of data
    "data": ENTRY_POINTS | {"pipeline", "build", "models", "diffusion", "corpus"},
    "config": ENTRY_POINTS | {"pipeline", "build", "data", "corpus"},
    "pipeline": ENTRY_POINTS | {"build", "data", "corpus"},
    "build": ENTRY_POINTS | {"data", "corpus"},
    "ar": ENTRY_POINTS | {"pipeline", "build", "diffusion", "data", "corpus", "models", "config", "pretrained"},  # the AR family
    "pretrained": ENTRY_POINTS | {"data", "corpus"},
    "model_encoders": ENTRY_POINTS | {"pipeline", "build", "ar", "data", "corpus", "models", "diffusion", "pretrained"},  # the shipped model: above the diffusion family, below the CLI
    "training": {"cli", "bench", "evaluation", "ui"},
    "captions": {"training", "cli", "bench", "ui", "pipeline", "build", "ar", "models", "diffusion", "pretrained"},  # beside evaluation (its embedders)
}
TOP_LEVEL = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}


def imported_parts(path: Path) -> set[str]:
    """The top-level ``discodiff`` parts ``path`` imports (``discodiff.codec.x`` → ``codec``), relative imports resolved."""
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package_parts = module_parts[:-1] if path.name != "__init__.py" else module_parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[: len(package_parts) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if node.module else [base + [alias.name] for alias in node.names]
            else:
                names = [(node.module or "").split(".")]
        else:
            continue
        for parts in names:
            if len(parts) > 1 and parts[0] == "discodiff":
                found.add(parts[1])
    return found


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_allowed_layers(path):
    layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if layer == "__init__" or layer in ENTRY_POINTS - {"training"}:
        return
    forbidden = TOP_LEVEL - ONLY[layer] - {layer} if layer in ONLY else FORBIDDEN[layer]
    imported = imported_parts(path) - {layer}
    assert not imported & forbidden, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(imported & forbidden)}"


def test_every_top_level_part_has_a_rule():
    assert TOP_LEVEL - set(FORBIDDEN) - set(ONLY) - ENTRY_POINTS == set(), "add the new module's rule to ONLY or FORBIDDEN"
