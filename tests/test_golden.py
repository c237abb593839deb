"""Golden outputs of the tiny diffusion model, recorded before the families refactor, that must not move.

With fixed seeds on the tiny config: the weights of a freshly built model directory, a sampled latent
tensor (guided, with a vocal), and the 20-step training-loss trajectory of each stage. Everything runs with
one torch thread so reductions happen in one order. Weights are compared bit for bit; sampled latents and
losses with a tolerance of float32 rounding, because oneDNN/BLAS may pick other kernels on another CPU
(on the machine that recorded them they are bit-identical).

Record again (only when a change of numbers is intended and justified) with::

    python tests/test_golden.py --record
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_training import overrides, run_training, train_losses, write_synthetic_data

GOLDEN = Path(__file__).resolve().parent / "golden"
LATENTS_FILE = GOLDEN / "tiny_sampled_latents.safetensors"
VALUES_FILE = GOLDEN / "tiny_values.json"
TINY_MODEL = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
STEPS = 20


def build_tiny_pipeline():
    from discodiff.build import build_pipeline
    from discodiff.config import DiscoDiffConfig

    return build_pipeline(DiscoDiffConfig.from_yaml(TINY_MODEL), seed=0)


def weight_digests(pipeline) -> dict[str, str]:
    """sha256 over every tensor of each trained component, in state-dict order."""
    digests = {}
    for name in ("primary", "secondary", "primary_vocal_encoder", "secondary_vocal_encoder"):
        digest = hashlib.sha256()
        for key, tensor in getattr(pipeline, name).state_dict().items():
            digest.update(key.encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
        digests[name] = digest.hexdigest()
    return digests


def sampled_latents(pipeline) -> torch.Tensor:
    from conftest import tone

    vocal = tone(0.5)[None]
    out = pipeline(["a calm chorale for strings"], vocal=vocal, num_inference_steps=3, text_guidance=2.0, vocal_guidance=1.5,
                   generator=torch.Generator().manual_seed(0), output_type="latent", progress=False)
    return out.latents


def loss_trajectories(work: Path) -> dict[str, list[float]]:
    data_dir = write_synthetic_data(work / "data")
    trajectories = {}
    for stage in ("primary", "secondary"):
        run_dir = work / stage
        run_training(overrides(data_dir, run_dir, task__stage=stage, max_steps=STEPS, checkpoint__every=STEPS))
        losses = train_losses(run_dir)
        trajectories[stage] = [losses[step] for step in range(1, STEPS + 1)]
    return trajectories


def one_thread(function, *args):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args)
    finally:
        torch.set_num_threads(threads)


def test_model_weights_are_unchanged():
    expected = json.loads(VALUES_FILE.read_text())["weights"]
    assert weight_digests(build_tiny_pipeline()) == expected


def test_sampled_latents_are_unchanged():
    latents = one_thread(sampled_latents, build_tiny_pipeline())
    torch.testing.assert_close(latents, load_file(LATENTS_FILE)["latents"], rtol=1e-4, atol=1e-5)


def test_training_loss_trajectories_are_unchanged(tmp_path):
    expected = json.loads(VALUES_FILE.read_text())["losses"]
    for stage, losses in loss_trajectories(tmp_path).items():
        assert losses == pytest.approx(expected[stage], rel=1e-4, abs=1e-6), stage


def record() -> None:
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    pipeline = build_tiny_pipeline()
    save_file({"latents": one_thread(sampled_latents, pipeline).contiguous()}, str(LATENTS_FILE))
    with tempfile.TemporaryDirectory() as work:
        losses = loss_trajectories(Path(work))
    VALUES_FILE.write_text(json.dumps({"weights": weight_digests(pipeline), "losses": losses}, indent=1) + "\n")
    print(f"recorded {LATENTS_FILE} and {VALUES_FILE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_golden.py --record")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    record()
