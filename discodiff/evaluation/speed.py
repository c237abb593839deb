"""Speed and memory of one generation, by part, for a pipeline of any family (issue 12, item 5).

- :class:`PeakMemory` — the peak memory a block of work adds: on a CUDA device ``torch.cuda.max_memory_allocated``
  above what was allocated before; on the CPU the peak resident set size above the RSS before. On Linux that peak is
  the kernel's own high-water mark (``VmHWM``, reset at entry through ``/proc/self/clear_refs``), so no spike is
  missed; where the mark cannot be reset, ``VmRSS`` is sampled every ``interval`` seconds by a thread and a shorter
  spike can be missed. Memory the allocator reuses from pages the process already holds adds nothing to the RSS.
- :func:`part_timers` — wall time spent inside each named module (forward hooks; the device synchronised at each
  boundary on CUDA), so a generation's time splits into its conditioning, each model and the codec's encoder,
  quantiser and decoder, the rest being the sampler and Python between them.
- :func:`measure_generation` — one call of ``pipeline(...)`` → :class:`GenerationSpeed`: wall time, real-time
  factor, peak added memory and seconds per part, on the same hardware in the same process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

RSS_INTERVAL = 0.005


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident set size in MiB (Linux ``/proc/self/status``); ``field="VmHWM"``: its peak."""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))
    return kib / 1024


def reset_rss_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ≥ 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """``with PeakMemory(device) as peak: …`` then ``peak.added_mib``: the peak memory the block added (MiB)."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = RSS_INTERVAL):
        self.device, self.interval = torch.device(device), interval
        self.added_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self._before = self._peak = rss_mib()
            if not reset_rss_peak():
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, rss_mib())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.added_mib = torch.cuda.max_memory_allocated(self.device) / 2**20 - self._before
        elif self._thread is None:
            self.added_mib = rss_mib("VmHWM") - self._before
        else:
            self._stop.set()
            self._thread.join()
            self.added_mib = max(self._peak, rss_mib()) - self._before


@contextmanager
def part_timers(parts: dict[str, nn.Module], device: torch.device | str = "cpu") -> Iterator[dict[str, float]]:
    """Within the block, the seconds spent in each module of ``parts`` (name → module), accumulated over calls;
    a module nested in another counts in both."""
    device = torch.device(device)
    seconds = dict.fromkeys(parts, 0.0)
    started: dict[str, list[float]] = {name: [] for name in parts}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def hooks(name: str) -> tuple[Callable, Callable]:
        def before(*_):
            sync()
            started[name].append(time.perf_counter())

        def after(*_):
            sync()
            seconds[name] += time.perf_counter() - started[name].pop()

        return before, after

    handles = []
    for name, module in parts.items():
        before, after = hooks(name)
        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield seconds
    finally:
        for handle in handles:
            handle.remove()


def pipeline_parts(pipeline) -> dict[str, nn.Module]:
    """The parts of a pipeline worth timing: its text encoder, its trained components (by name) and its codec's
    encoder, quantiser and decoder."""
    parts = {"text_encoder": pipeline.text_encoder, **pipeline.trainable_components()}
    model = pipeline.codec.model
    for name in ("encoder", "quantizer", "decoder"):
        if isinstance(getattr(model, name, None), nn.Module):
            parts[f"codec.{name}"] = getattr(model, name)
    return parts


@dataclass
class GenerationSpeed:
    """One generation: ``wall_s``, ``audio_s``, ``rtf`` (audio seconds per wall second), ``peak_added_mib`` and
    ``parts`` (seconds inside each part; ``other`` = the sampler and Python between them)."""

    wall_s: float
    audio_s: float
    rtf: float
    peak_added_mib: float
    device: str
    parts: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def measure_generation(pipeline, call: Callable[[], object], audio_seconds: float,
                       device: torch.device | str = "cpu") -> tuple[GenerationSpeed, object]:
    """Run ``call()`` (one generation by ``pipeline``) once under the part timers and :class:`PeakMemory`; return its
    :class:`GenerationSpeed` and ``call``'s result."""
    parts = pipeline_parts(pipeline)
    with PeakMemory(device) as peak, part_timers(parts, device) as seconds:
        start = time.perf_counter()
        result = call()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    inside = {name: round(value, 4) for name, value in seconds.items() if value > 0}  # the parts do not nest
    inside["other"] = round(max(0.0, wall - sum(inside.values())), 4)
    return GenerationSpeed(round(wall, 4), audio_seconds, round(audio_seconds / wall, 4), round(peak.added_mib, 1),
                           str(device), inside), result
