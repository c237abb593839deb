"""sample/accompany.py: accompaniments for the tracks the vocal-fit bench selects, one <track id>.wav each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf
from typer.testing import CliRunner

from discodiff.cli import app
from test_vocal_fit import TRACKS, pieces, rendered_tree

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sample" / "accompany.py"


def accompany(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_accompany_writes_one_accompaniment_per_selected_track_and_keeps_existing_ones(tmp_path):
    root = rendered_tree(tmp_path / "rendered")
    validation = [piece.replace("/", "-") for piece in pieces("validation", len(TRACKS))]
    train = pieces("train", 1)[0].replace("/", "-")
    captions = [{"track_id": track, "captions": [f"a chorale {i}"]} for i, track in enumerate(validation + [train])]
    (root / "seed0" / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))
    model = tmp_path / "model"
    result = CliRunner().invoke(app, ["new-model", str(model), "--config", str(REPO / "configs" / "tiny.yaml")])
    assert result.exit_code == 0, result.output

    out = tmp_path / "out"
    result = accompany("--model", model, "--data", root, "--out", out, "--limit", 2, "--seconds", 1, "--steps", 2, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert written == [f"seed0/{track}.wav" for track in validation[:2]]  # the split's first two; never the train track
    for name in written:
        info = sf.info(str(out / name))
        assert info.samplerate == 44100 and info.frames == 44100

    before = (out / written[0]).read_bytes()
    result = accompany("--model", model, "--data", root, "--out", out, "--limit", 2, "--seconds", 1, "--steps", 2)
    assert result.returncode == 1 and "error: " in result.stderr and "--overwrite" in result.stderr
    assert (out / written[0]).read_bytes() == before

    (root / "seed0" / "captions.jsonl").unlink()
    result = accompany("--model", model, "--data", root, "--out", tmp_path / "other", "--limit", 2, "--seconds", 1)
    assert result.returncode == 1 and "captions.jsonl: missing" in result.stderr
