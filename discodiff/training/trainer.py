"""The family-agnostic Accelerate training loop; what is trained comes from the model family's :class:`~.task.TrainingTask`.

``Trainer(config).train(resume="latest")`` runs under ``accelerate launch`` on one or many processes.
A run directory holds everything needed to resume and to export::

    RUN/train_config.yaml          the resolved config
    RUN/<task run files>           what the task keeps for export (the diffusion task: latent_stats.json)
    RUN/metrics.jsonl              one line per optimiser step and per validation
    RUN/checkpoints/checkpoint-N/  accelerator.save_state + TrainingState (EMA, generators, counters, run id)
    RUN/samples/step-N/            i.wav, i.png, captions.json (reference/: what the batch itself sounds like)
    RUN/logs/<project_name>/       TensorBoard events (or W&B, with logging.log_with=wandb)

Earlier work is protected (:mod:`.run`): a new run refuses a folder that holds a run unless told to
``overwrite`` it, a resumed run refuses a changed config and newer checkpoints, and checkpoint pruning only
deletes the current run's own checkpoints. :func:`check_run` makes every check that needs no model (the
model config, the data, the run directory), so a launch script fails in one line before building anything.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (DataLoaderConfiguration, GradientAccumulationPlugin, ProjectConfiguration, broadcast,
                              broadcast_object_list, set_seed)
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch import nn
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from discodiff.errors import ConfigError, DataError

from .adversary import Adversary, AdversarySpec
from .checkpoint import CHECKPOINTS_DIR, checkpoint_path, remove_incomplete, save_checkpoint
from .config import OptimizerSection, TrainConfig
from .logging import MetricsLog, log_samples, loss_by_time_bucket, write_samples
from .run import LOGS_DIR, METRICS_FILE, SAMPLES_DIR, RunPlan, plan_run, write_run_config
from .state import TrainingState, ema_weights, new_run_id
from .task import TrainingTask, task_class

CHECKPOINT_COPIES = 4  # weights, two AdamW moments, EMA: the bytes of a checkpoint per parameter byte


def check_run(config: TrainConfig, resume: str | Path | None = None, overwrite: bool = False) -> RunPlan:
    """Every check of a run that needs no model: the model and data (the task's :meth:`~.task.TrainingTask.check`)
    and the run directory (:func:`~.run.plan_run`). Raises one-line errors; writes nothing. :meth:`Trainer.train`
    checks again."""
    task = task_class(config.model)
    task.check(config)
    return plan_run(config, resume, overwrite, run_files=task.run_files)


def check_precision(mixed_precision: str, device: torch.device) -> None:
    """fp16 on the CPU would silently train in fp32 (Accelerate turns autocast off there); bf16 autocasts on the CPU."""
    if mixed_precision == "fp16" and device.type == "cpu":
        raise ConfigError("mixed_precision=fp16 needs a CUDA GPU (this run is on the CPU, where it would silently train "
                          "in fp32); use mixed_precision=bf16 or mixed_precision=no on CPU")


class Trainer:
    """Trains the :class:`~.task.TrainingTask` of the model family ``config.model`` names: AdamW with warmup + cosine
    decay, clipping, gradient accumulation, mixed precision, EMA, validation, audio samples and atomic checkpoints;
    and the task's adversary, if it has one (:mod:`.adversary`), with an optimiser of its own.

    The constructor seeds Python, NumPy and torch once with ``accelerate.utils.set_seed(config.seed)`` — the only
    global seeding, for dropout and data-loader workers — and then builds the task, so its model is built from that
    state; the task draws its own randomness (for the diffusion task t, condition dropout and noise) from the
    checkpointed per-process generator of :class:`TrainingState`.

    Building the trainer writes nothing; :meth:`train` checks the run directory (see :mod:`.run`) first.
    """

    def __init__(self, config: TrainConfig):
        self.config = config
        self.run_dir = Path(config.output_dir)
        cls = task_class(config.model)
        cls.check(config)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=config.optimizer.gradient_accumulation_steps, sync_with_dataloader=False),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
            log_with=None if config.logging.log_with == "none" else config.logging.log_with,
            project_config=ProjectConfiguration(project_dir=str(self.run_dir), logging_dir=str(self.run_dir / LOGS_DIR)),
        )
        check_precision(config.mixed_precision, self.accelerator.device)
        set_seed(config.seed)
        self.task: TrainingTask = cls(config, config.task, config.seed)
        self.data = self.task.training_data(config.data, config.validation.num_items)
        module = self.task.module
        if config.gradient_checkpointing:
            if not hasattr(module, "enable_gradient_checkpointing"):
                raise ConfigError(f"gradient_checkpointing=true: the {type(self.task).__name__} model does not support it; "
                                  "set gradient_checkpointing=false")
            module.enable_gradient_checkpointing()
        self.task.to(self.accelerator.device)

        optimizer = adamw(module, config.optimizer)
        self.model, self.optimizer, self.train_loader, self.validation_loader, self.lr_scheduler = self.accelerator.prepare(
            module.train(), optimizer, *self._dataloaders(), self._lr_schedule(optimizer))
        self.adversary = self._adversary(self.task.adversary)
        if len(self.train_loader) == 0:
            raise DataError(f"the training set ({len(self.data.train)} items) is smaller than one batch "
                             f"({config.data.batch_size} per process × {self.accelerator.num_processes}); lower data.batch_size")
        ema = EMAModel(self.model.parameters(), decay=config.ema.decay, use_ema_warmup=config.ema.use_warmup,
                       inv_gamma=config.ema.inv_gamma, power=config.ema.power, update_after_step=config.ema.update_after_step)
        run_id = broadcast_object_list([new_run_id()])[0]  # the main process's, so that every process agrees
        self.state = TrainingState(ema, config.seed, self.accelerator.process_index, self.accelerator.num_processes, run_id)
        self.accelerator.register_for_checkpointing(self.state)
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE)

    # --- setup ---------------------------------------------------------------------------------

    def _adversary(self, spec: AdversarySpec | None) -> Adversary | None:
        """The task's adversary prepared after the module (so checkpoints hold it as model_1, optimizer_1,
        scheduler_1), with its own AdamW and schedule; None when the task has none."""
        if spec is None:
            return None
        if self.config.optimizer.gradient_accumulation_steps > 1:
            raise ConfigError(f"optimizer.gradient_accumulation_steps={self.config.optimizer.gradient_accumulation_steps}: "
                              f"the {type(self.task).__name__} trains an adversary, which steps on every batch; "
                              "set optimizer.gradient_accumulation_steps=1 (raise data.batch_size instead)")
        optimizer = adamw(spec.module, self.config.optimizer, spec.learning_rate)
        model, optimizer, schedule = self.accelerator.prepare(spec.module.train(), optimizer, self._lr_schedule(optimizer))
        return Adversary(self.accelerator, model, optimizer, schedule, spec.max_grad_norm)

    def _lr_schedule(self, optimizer: torch.optim.Optimizer):
        """Linear warmup, then cosine decay to 0 at ``max_steps``; counted in scheduler calls, which the prepared
        scheduler makes once per process per optimiser step."""
        processes = self.accelerator.num_processes
        return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=self.config.optimizer.warmup_steps * processes,
                                               num_training_steps=self.config.max_steps * processes)

    def _dataloaders(self) -> tuple[DataLoader, DataLoader]:
        """Training batches in a seeded order per epoch (accelerate's seedable sampler); validation in dataset order."""
        data = self.config.data
        train = DataLoader(self.data.train, batch_size=data.batch_size, shuffle=True, drop_last=True,
                           collate_fn=self.data.collate_fn, num_workers=data.num_workers,
                           generator=torch.Generator().manual_seed(self.config.seed))
        validation = DataLoader(self.data.validation, batch_size=self.config.validation.batch_size,
                                collate_fn=self.data.collate_fn, num_workers=data.num_workers,
                                generator=torch.Generator().manual_seed(self.config.seed))
        return train, validation

    # --- the loop ------------------------------------------------------------------------------

    def train(self, resume: str | Path | None = None, overwrite: bool = False) -> Path:
        """Train until ``config.max_steps`` (or, with ``config.max_minutes``, until that much time has passed: then it
        saves a checkpoint of the step it stopped at); returns the run directory.

        ``resume``: ``latest`` or a checkpoint directory of ``config.output_dir``; ``overwrite``: allow deleting earlier
        work there (a whole earlier run without ``resume``; the checkpoints after the resumed one with it). The run
        directory is checked (:func:`~.run.plan_run`) before anything is written.
        """
        accelerator, config, state = self.accelerator, self.config, self.state
        checkpoints = self.run_dir / CHECKPOINTS_DIR
        plan = plan_run(config, resume, overwrite, expected_bytes=self._checkpoint_bytes(), run_files=self.task.run_files)
        if plan.resume:
            self.task.check_resume(self.run_dir)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for removed in plan.remove_earlier_work():
                accelerator.print(f"removed {removed} (--overwrite)")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(config, self.run_dir)
            self.task.write_run_files(self.run_dir)
            for leftover in remove_incomplete(checkpoints):
                accelerator.print(f"removed incomplete checkpoint {leftover}")
        accelerator.wait_for_everyone()
        if plan.start is not None:
            accelerator.load_state(str(plan.start))
            accelerator.print(f"resumed from {plan.start} at step {state.step}")
        elif plan.resume:
            accelerator.print(f"no checkpoint in {checkpoints} yet: starting from step 0")
        for note in plan.notes:
            accelerator.print(note)
        if plan.resume and accelerator.is_main_process:
            self.metrics.truncate_after(state.step)  # records a crashed run wrote after its last checkpoint
        accelerator.init_trackers(config.logging.project_name, config=tracker_config(config))

        progress = tqdm(total=config.max_steps, initial=state.step, desc=f"train {self.task.name}",
                        disable=not (config.progress and accelerator.is_local_main_process))
        batches = self._batches()
        window_losses, window_times = [], []
        started = time.monotonic()
        while state.step < config.max_steps:
            losses, t, grad_norm = self._micro_step(next(batches))
            window_losses.append(accelerator.gather(losses.detach()))
            if t is not None:
                window_times.append(accelerator.gather(t))
            if not accelerator.sync_gradients:
                continue
            state.ema.step(self.model.parameters())
            state.step += 1
            losses = torch.cat(window_losses)
            buckets = loss_by_time_bucket(losses, torch.cat(window_times), config.logging.loss_buckets) \
                if len(window_times) == len(window_losses) else {}
            window_losses, window_times = [], []
            metrics = {"train/loss": losses.mean().item(), "train/lr": self.lr_scheduler.get_last_lr()[0],
                       "train/grad_norm": grad_norm.item(), **buckets}
            if self.adversary is not None:
                metrics.update({name: value.item() for name, value in self.adversary.metrics.items()})
            self._log(metrics)
            progress.update(1)
            progress.set_postfix(loss=f"{metrics['train/loss']:.4f}", lr=f"{metrics['train/lr']:.2e}")
            self._periodic()
            if self._out_of_time(started) and state.step < config.max_steps:
                accelerator.print(f"stopping at step {state.step} of {config.max_steps}: max_minutes={config.max_minutes:g} "
                                  f"reached; go on with --resume latest")
                break
        if not checkpoint_path(checkpoints, state.step).is_dir():
            save_checkpoint(accelerator, checkpoints, state.step, config.checkpoint.keep_last, state.run_id)
        progress.close()
        accelerator.end_training()
        return self.run_dir

    def _out_of_time(self, started: float) -> bool:
        """``max_minutes`` have passed since ``started`` by the main process's clock (broadcast, so that every process
        stops after the same step)."""
        if self.config.max_minutes is None:
            return False
        late = torch.tensor([time.monotonic() - started >= 60 * self.config.max_minutes], device=self.accelerator.device)
        return bool(broadcast(late).item())

    def _micro_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Forward and backward on one batch; on the last batch of an accumulation window also clip and step.
        Returns the per-sample losses, their times (None when the task has none) and (on optimiser steps) the
        gradient norm before clipping."""
        accelerator, grad_norm = self.accelerator, None
        adversary = {} if self.adversary is None else {"adversary": self.adversary}
        with accelerator.accumulate(self.model):
            losses, t = self.task.loss(self.model, self.task.prepare(batch, accelerator.device), self.state.generator,
                                       **adversary)
            accelerator.backward(losses.mean())
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), self.config.optimizer.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
        self.state.batches_seen += 1
        return losses, t, grad_norm

    def _batches(self):
        """Training batches from the checkpointed data position (``state.batches_seen``) on, epoch after epoch."""
        epoch, skip = divmod(self.state.batches_seen, len(self.train_loader))
        while True:
            self.train_loader.set_epoch(epoch)
            if hasattr(self.data.train, "set_epoch"):
                self.data.train.set_epoch(epoch)
            yield from self.accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
            epoch, skip = epoch + 1, 0

    def _periodic(self) -> None:
        """Validation, samples and checkpoints that fall due at this step."""
        config, step = self.config, self.state.step
        if config.validation.every and step % config.validation.every == 0:
            with ema_weights(self.state.ema, self.model):
                metrics = self.task.validation_metrics(self.accelerator, self.model, self.validation_loader, config.seed)
            if metrics:
                self._log(metrics)
        if config.samples.every and step % config.samples.every == 0:
            self._samples()
        if step % config.checkpoint.every == 0:
            save_checkpoint(self.accelerator, self.run_dir / CHECKPOINTS_DIR, step, config.checkpoint.keep_last,
                            self.state.run_id)

    def _samples(self) -> None:
        """The task's audio with the EMA weights on the first validation items (every process; the main one writes)."""
        accelerator, step = self.accelerator, self.state.step
        items = [self.data.validation[i] for i in range(self.config.samples.num_samples)]
        batch = (self.data.collate_fn or default_collate)(items)
        with ema_weights(self.state.ema, self.model):
            samples = self.task.samples(accelerator, self.model, batch, step)
        if samples is None or not accelerator.is_main_process:
            return
        samples_dir = self.run_dir / SAMPLES_DIR
        if not (samples_dir / "reference").is_dir():
            reference = self.task.reference(batch)
            if reference is not None:
                write_samples(samples_dir / "reference", reference.audios, reference.sample_rate, reference.captions)
        write_samples(samples_dir / f"step-{step}", samples.audios, samples.sample_rate, samples.captions)
        log_samples(accelerator, "samples", samples.audios, samples.sample_rate, samples.captions, step)

    def _checkpoint_bytes(self) -> int:
        """About the size of one checkpoint (weights, optimiser moments and EMA; the adversary's weights and moments),
        for the free-space check."""
        unwrap = self.accelerator.unwrap_model
        adversary = 0 if self.adversary is None else (CHECKPOINT_COPIES - 1) * parameter_bytes(unwrap(self.adversary.model))
        return CHECKPOINT_COPIES * parameter_bytes(unwrap(self.model)) + adversary

    def _log(self, metrics: dict[str, float]) -> None:
        self.accelerator.log(metrics, step=self.state.step)
        if self.accelerator.is_main_process:
            self.metrics.write(self.state.step, metrics)


def adamw(module: nn.Module, settings: OptimizerSection, learning_rate: float | None = None) -> torch.optim.AdamW:
    """The run's AdamW over ``module``'s parameters: ``settings``' betas, weight decay and eps, at ``learning_rate``
    (default ``settings.learning_rate``)."""
    return torch.optim.AdamW(module.parameters(), lr=settings.learning_rate if learning_rate is None else learning_rate,
                             betas=tuple(settings.betas), weight_decay=settings.weight_decay, eps=settings.eps)


def parameter_bytes(module: nn.Module) -> int:
    """The bytes of ``module``'s parameters."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def tracker_config(config: TrainConfig) -> dict[str, int | float | str | bool]:
    """The config flattened to ``section.key`` scalars (lists and None as text), as TensorBoard's hparams need."""
    flat = {}

    def visit(prefix: str, node: dict) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                visit(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)

    visit("", config.to_dict())
    return flat
