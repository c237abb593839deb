"""The trainer's own checkpointed state: step counters, the per-process training generators, the EMA weights.

Accelerate checkpoints the model, optimiser, LR scheduler, data sampler and global RNGs itself;
:class:`TrainingState` is registered with ``accelerator.register_for_checkpointing`` for the rest. Accelerate
writes registered objects from the main process only, so :meth:`TrainingState.state_dict` gathers every
process's generator state (and full EMA tensors under FSDP) — it runs on all processes.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from diffusers.training_utils import EMAModel
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, distribute_tensor

from discodiff.errors import TrainingError

STATE_FILE = "custom_checkpoint_0.pkl"  # accelerate's name for the first (and only) registered object


def new_run_id() -> str:
    """A fresh run id (32 hex digits)."""
    return uuid.uuid4().hex


def process_seed(seed: int, process_index: int) -> int:
    """An independent seed for process ``process_index`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])


class TrainingState:
    """``step`` (optimiser steps done), ``batches_seen`` (micro-batches consumed, for the data position),
    ``generator`` (this process's source of t, condition dropout and noise), ``ema`` and ``run_id`` (the run's
    identity: checkpoints carry it, a resumed run inherits it; a checkpoint from before run ids keeps the new one).

    ``ema`` tracks the prepared model's parameters, so under FSDP it holds each process's shard; checkpoints
    store full tensors either way.
    """

    def __init__(self, ema: EMAModel, seed: int, process_index: int, num_processes: int, run_id: str | None = None):
        self.ema, self.seed = ema, seed
        self.run_id = run_id or new_run_id()
        self.process_index, self.num_processes = process_index, num_processes
        self.step = 0
        self.batches_seen = 0
        self.generator = torch.Generator().manual_seed(process_seed(seed, process_index))

    def state_dict(self) -> dict:
        """Counters, every process's generator state (gathered: call on all processes) and the EMA with full tensors."""
        ema = dict(self.ema.state_dict())
        ema["shadow_params"] = [p.full_tensor() if isinstance(p, DTensor) else p for p in ema["shadow_params"]]
        return {"step": self.step, "batches_seen": self.batches_seen, "ema": ema, "run_id": self.run_id,
                "generators": gather_object([self.generator.get_state()])}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.batches_seen = state["step"], state["batches_seen"]
        self.run_id = state.get("run_id") or self.run_id
        ema = dict(state["ema"])
        ema["shadow_params"] = [_like(saved, current) for saved, current in zip(ema["shadow_params"], self.ema.shadow_params, strict=True)]
        self.ema.load_state_dict(ema)
        generators = state["generators"]
        if len(generators) == self.num_processes:
            self.generator.set_state(generators[self.process_index])
        else:
            warnings.warn(f"the checkpoint was written by {len(generators)} processes, this run has {self.num_processes}: "
                          "the training generators restart from the run seed and step (the run continues, not bit-exactly)",
                          stacklevel=2)
            self.generator.manual_seed(process_seed(self.seed + self.step, self.process_index))

    @staticmethod
    def read_ema_parameters(checkpoint: str | Path) -> list[torch.Tensor]:
        """The EMA parameters stored in ``checkpoint``, in the order of the stage model's ``parameters()``."""
        path = Path(checkpoint) / STATE_FILE
        if not path.is_file():
            raise TrainingError(f"{path} not found: {checkpoint} is not a complete training checkpoint; "
                                "choose another checkpoint of the run")
        return torch.load(path, map_location="cpu", weights_only=False)["ema"]["shadow_params"]


@contextmanager
def ema_weights(ema: EMAModel, model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model`` holds the EMA weights (in eval mode); its training weights and mode come back after.

    The training weights are kept as copies on their device (sharded like the parameters under FSDP).
    """
    was_training = model.training
    parameters = list(model.parameters())
    training_weights = [p.detach().clone() for p in parameters]
    ema.copy_to(parameters)
    model.eval()
    try:
        yield model
    finally:
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()  # FSDP2 leaves the root unsharded after a forward without backward
        with torch.no_grad():
            for parameter, weights in zip(parameters, training_weights):
                parameter.copy_(weights)
        model.train(was_training)


def _like(saved: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``saved`` (full) placed like ``current``: same device, and sharded the same way when ``current`` is a DTensor."""
    if isinstance(current, DTensor):
        return distribute_tensor(saved.to(current.device_mesh.device_type), current.device_mesh, current.placements)
    return saved.to(current.device)
