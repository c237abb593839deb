"""End to end on CPU, as a user runs it: render Bach stems → prepare → train primary and secondary
(tiny, a few hundred steps) → export both into one model directory → sample an accompaniment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf
from typer.testing import CliRunner

from discodiff.cli import app

REPO = Path(__file__).resolve().parents[1]
STEPS = 150


def run(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def losses(run_dir: Path) -> list[float]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["train/loss"] for r in records if "train/loss" in r]


def test_render_prepare_train_export_sample(tmp_path):
    stems, cache, model = tmp_path / "stems", tmp_path / "cache", tmp_path / "model"
    invoke(["render-corpus", "--pieces", "bach/bwv66.6,bach/bwv2.6,bach/bwv10.7", "--seconds", "8", "--out", str(stems), "--quiet"])
    output = invoke(["prepare", str(stems), "--out", str(cache), "--codec", "tiny", "--window-seconds", "4", "--min-seconds", "2", "--quiet"])
    assert "windows" in output and (cache / "dataset" / "latent_stats.json").is_file()

    for stage in ("primary", "secondary"):
        run_dir = tmp_path / f"run-{stage}"
        run(["train/train.py", "--config", "configs/train/tiny.yaml", f"task.stage={stage}", f"output_dir={run_dir}",
             f"data.data_dir={cache}", f"max_steps={STEPS}", "data.batch_size=4", "data.crop_frames=64",
             "logging.log_with=none", "samples.every=0", "validation.every=50", "validation.num_items=2",
             "checkpoint.every=50", "progress=false"])
        trajectory = losses(run_dir)
        assert len(trajectory) == STEPS
        first, last = sum(trajectory[:20]) / 20, sum(trajectory[-20:]) / 20
        assert last < first, f"{stage}: the loss did not go down ({first:.3f} -> {last:.3f})"
        run(["train/export.py", str(run_dir), str(model)])

    vocal = stems / "bach-bwv66.6" / "vocals.wav"
    invoke(["sample", "--model", str(model), "--prompt", "Baroque chorale in F# minor", "--vocal", str(vocal),
            "--out", str(tmp_path / "acc.wav"), "--mix", str(tmp_path / "mix.wav"), "--steps", "4", "--quiet"])
    accompaniment, rate = sf.read(tmp_path / "acc.wav")
    assert rate == 44100 and accompaniment.shape[0] == sf.info(vocal).frames
    assert json.loads((model / "latent_stats.json").read_text())["fitted"] is True
