"""The one training loop. Every method (fine-tuning, soft-label KD, internal KD, PID, SID) is a list of stages run here.

One optimizer step, as a reader should see it:
    teacher signals          <- the live teacher under inference_mode, cut after its deepest needed layer,
                                or the same knowledge read from a cache (engine.teacher.TeacherSource)
    loss                     <- DistillModule.forward(batch): student through its taps, then the stage objective
    backward, (accumulate), clip, optimizer step, scheduler step
Accelerate provides devices, mixed precision and DDP. Batching is ours: each epoch's global batches are a
deterministic function of (seed, stage, epoch), each process takes its slice of every global batch, and resuming
skips the batches already consumed, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from kdlab.config import TrainConfig
from kdlab.data import EpochBatches
from kdlab.data.encoding import student_inputs
from kdlab.engine.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from kdlab.engine.evaluation import evaluate, length_sorted_batches
from kdlab.engine.logger import MetricsLogger
from kdlab.engine.module import DistillModule
from kdlab.engine.teacher import TeacherSignals, TeacherSource
from kdlab.methods.matches import FeatureMatcher
from kdlab.methods.objective import Objective
from kdlab.methods.stages import Stage
from kdlab.metrics import higher_is_better
from kdlab.taps import FeatureTaps


@dataclass
class Job:
    """Everything one training run needs, already built and validated."""

    student: nn.Module
    matcher: FeatureMatcher
    objective: Objective
    stages: list[Stage]
    train_items: list[dict[str, Any]]
    dev_items: list[dict[str, Any]] | None
    collate: Callable[[list[dict[str, Any]]], dict[str, Tensor]]
    metrics: tuple[str, ...]
    main_metric: str
    regression: bool
    num_labels: int
    output_dir: Path
    save_student: Callable[[nn.Module, Path], None]
    settings: TrainConfig
    teacher: TeacherSource | None = None
    plateau_patience: int = 1
    plateau_min_delta: float = 1e-3
    model_dirname: str = "student"
    # Word-level tasks read other batch keys and score the dev set their own way (tags, heads); sentence tasks
    # leave both None and get student_inputs and kdlab.engine.evaluation.evaluate.
    model_inputs: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None


@dataclass
class TrainResult:
    global_step: int
    best_metric: float | None
    dev_metrics: dict[str, float] = field(default_factory=dict)
    finished: bool = True


class Trainer:
    def __init__(self, job: Job, accelerator: Accelerator) -> None:
        self.job = job
        self.cfg = job.settings
        self.acc = accelerator
        self.module = DistillModule(job.student, job.matcher, job.objective, job.model_inputs or student_inputs)
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=self.cfg.lr)
        self.module, self.optimizer = self.acc.prepare(self.module, self.optimizer)
        if job.teacher is not None:
            job.teacher.prepare(self.acc.device, self.acc.autocast)
        self.batches = EpochBatches(
            [_length(item) for item in job.train_items],
            self.cfg.batch_size,
            seed=self.cfg.seed,
            bucket=self.cfg.bucket_by_length,
        )
        self.ckpt_dir = job.output_dir / "checkpoints"
        tb = job.output_dir / "tensorboard" if self.cfg.tensorboard else None
        self.log = MetricsLogger(job.output_dir / "metrics.jsonl", tb, enabled=self.acc.is_main_process)
        self.dev_metrics: dict[str, float] = {}

    # ----------------------------------------------------------------------------------------------- set-up
    def _param_groups(self) -> list[dict[str, Any]]:
        # A model with a task head of its own (word models) may train it at head_lr: a fresh CRF or biaffine
        # scorer on a pretrained encoder barely moves at the encoder's learning rate.
        head_names: set[str] = set()
        if self.cfg.head_lr is not None and hasattr(self.job.student, "head_parameter_names"):
            head_names = set(self.job.student.head_parameter_names())
        decay, no_decay, head = [], [], []
        for name, param in self.job.student.named_parameters():
            if name in head_names:
                head.append(param)
            else:
                (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if head:
            groups.append({"params": head, "weight_decay": 0.0, "lr": self.cfg.head_lr})
        projections = list(self.job.matcher.parameters())
        if projections:
            groups.append({"params": projections, "weight_decay": 0.0, "lr": self.cfg.projection_lr})
        return groups

    def _scheduler(self, stage: Stage) -> Any:
        steps = max(1, stage.epochs * len(self.batches) // self.cfg.grad_accum_steps)
        return get_linear_schedule_with_warmup(self.optimizer, int(self.cfg.warmup_ratio * steps), steps)

    @property
    def _unwrapped(self) -> DistillModule:
        return self.acc.unwrap_model(self.module)

    # ----------------------------------------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> TrainResult:
        state, saved = self._restore() if resume else (TrainState(), None)
        if saved is None:
            # Dropout masks then do not depend on how the run was set up (live teacher or cache, API or CLI).
            set_seed(self.cfg.seed)
        while state.stage < len(self.job.stages):
            stage = self.job.stages[state.stage]
            scheduler = self._scheduler(stage)
            if saved is not None:  # resuming inside this stage
                # after creating the scheduler, which resets the learning rates to their step-0 values
                self.optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
                saved = None
            while state.epoch < stage.epochs:
                if not self._run_epoch(stage, state, scheduler):
                    return self._finish(state, finished=False)
                stage_done = self._end_epoch(stage, state)
                state.epoch, state.batch = state.epoch + 1, 0
                self._checkpoint(state, scheduler)
                if stage_done:
                    break
            state.stage, state.epoch, state.batch = state.stage + 1, 0, 0
            state.plateau_best, state.plateau_bad_epochs = None, 0
        return self._finish(state, finished=True)

    def _run_epoch(self, stage: Stage, state: TrainState, scheduler: Any) -> bool:
        """Train one epoch (from ``state.batch`` on); False when ``max_steps`` stopped training."""
        global_batches = self.batches.for_epoch(state.stage * 10_000 + state.epoch)
        self.job.objective.start_epoch(state.epoch)
        student_taps = self._unwrapped.student_taps(stage)
        self.module.train()
        meter = _Meter()
        bar = tqdm(
            total=len(global_batches),
            initial=state.batch,
            desc=f"{stage.name} epoch {state.epoch + 1}/{stage.epochs}",
            disable=not (self.cfg.progress_bar and self.acc.is_main_process),
            leave=False,
        )
        for indices in global_batches[state.batch :]:
            # Schedules inside a stage (annealed temperatures, teacher annealing, KD ramp-up) read this fraction.
            self.job.objective.set_progress(stage, (state.epoch + state.batch / len(global_batches)) / stage.epochs)
            mine, batch = self._local_batch(indices)
            last_micro = (state.micro_step + 1) % self.cfg.grad_accum_steps == 0
            # Only the micro-batch that closes an update gets a reward pass, so only its random state is kept.
            dropout_state = self._rng_state() if last_micro and self.job.objective.wants_after_update else None
            _, parts = self._forward_backward(batch, mine, stage, student_taps, sync=last_micro)
            state.micro_step += 1
            state.batch += 1
            meter.add(parts, len(indices))
            bar.update(1)
            if last_micro:
                self._optimizer_step(scheduler)
                self._after_update(batch, stage, student_taps, dropout_state)
                state.global_step += 1
                self._after_step(stage, state, scheduler, meter, bar)
                if self.cfg.max_steps is not None and state.global_step >= self.cfg.max_steps:
                    bar.close()
                    self._checkpoint(state, scheduler)
                    return False
        bar.close()
        if state.micro_step % self.cfg.grad_accum_steps:  # leftover accumulated gradients at epoch end
            self._optimizer_step(scheduler)
            state.global_step += 1
            state.micro_step = 0
        return True

    def _forward_backward(
        self,
        batch: dict[str, Tensor],
        indices: list[int],
        stage: Stage,
        student_taps: FeatureTaps,
        sync: bool,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        teacher = self._teacher_signals(stage, batch, indices, "train")
        no_sync = contextlib.nullcontext() if sync else self.acc.no_sync(self.module)
        with no_sync:
            with self.acc.autocast():
                loss, parts = self.module(batch, stage, student_taps, teacher)
            self.acc.backward(loss / self.cfg.grad_accum_steps)
        return loss, parts

    def _rng_state(self) -> dict[str, Tensor]:
        state = {"cpu": torch.random.get_rng_state()}
        if self.acc.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.acc.device)
        return state

    def _after_update(
        self, batch: dict[str, Tensor], stage: Stage, student_taps: FeatureTaps, dropout_state: dict | None
    ) -> None:
        """Let the objective see the updated student on the batch it just learned from (a policy's reward).

        Only objectives that ask for it pay the extra forward pass. It replays the random state of the training
        forward, so the student drops the same units as it did then: the change in its output is the update's
        alone, not a new dropout draw. The fork leaves the training stream where it was.
        """
        if dropout_state is None:  # the objective asked for no reward pass
            return
        module = self._unwrapped
        cuda = self.acc.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.acc.device] if cuda else []):
            torch.random.set_rng_state(dropout_state["cpu"])
            if cuda:
                torch.cuda.set_rng_state(dropout_state["cuda"], self.acc.device)
            with torch.no_grad(), self.acc.autocast():
                _, output = student_taps(**module.model_inputs(batch))
        self.job.objective.after_update(module.objective.student_view(output), batch)

    def _optimizer_step(self, scheduler: Any) -> None:
        if self.cfg.max_grad_norm is not None:
            self.acc.clip_grad_norm_(self.module.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ----------------------------------------------------------------------------------------------- teacher
    def _teacher_signals(
        self, stage: Stage, batch: dict[str, Tensor], indices: list[int], split: str
    ) -> TeacherSignals:
        if self.job.teacher is None:
            return TeacherSignals()
        return self.job.teacher.signals(stage, batch, indices, split)

    # ----------------------------------------------------------------------------------------------- data
    def _local_batch(self, indices: list[int]) -> tuple[list[int], dict[str, Tensor]]:
        """This process's slice of a global batch (item indices), collated (dynamic padding) and on the device."""
        n, world, rank = len(indices), self.acc.num_processes, self.acc.process_index
        mine = indices[rank * n // world : (rank + 1) * n // world]
        batch = self.job.collate([self.job.train_items[i] for i in mine])
        return mine, {k: v.to(self.acc.device, non_blocking=True) for k, v in batch.items()}

    # ----------------------------------------------------------------------------------------------- bookkeeping
    def _after_step(self, stage: Stage, state: TrainState, scheduler: Any, meter: _Meter, bar: Any) -> None:
        if state.global_step % self.cfg.log_every_steps == 0:
            record = meter.flush()
            record.update(step=state.global_step, stage=stage.name, lr=scheduler.get_last_lr()[0], split="train")
            self.log.log(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.0f}")
        every = self.cfg.eval_every_steps
        if every and state.global_step % every == 0 and stage.use_logits:
            self._evaluate_and_keep_best(stage, state)
        every = self.cfg.checkpoint_every_steps
        if every and state.global_step % every == 0:
            self._checkpoint(state, scheduler)

    def _end_epoch(self, stage: Stage, state: TrainState) -> bool:
        """Evaluate at the end of an epoch; True when a plateau stage has converged."""
        if stage.use_logits and not self.cfg.eval_every_steps:
            self._evaluate_and_keep_best(stage, state)
        if not stage.until_plateau or not self.job.dev_items:
            return False
        dev_loss = self._dev_stage_loss(stage)
        self.log.log({"step": state.global_step, "stage": stage.name, "split": "dev", "stage_loss": dev_loss})
        best = state.plateau_best
        if best is None or dev_loss < best - abs(best) * self.job.plateau_min_delta:
            state.plateau_best, state.plateau_bad_epochs = dev_loss, 0
        else:
            state.plateau_bad_epochs += 1
        return state.plateau_bad_epochs >= self.job.plateau_patience

    def _evaluate_and_keep_best(self, stage: Stage, state: TrainState) -> None:
        if not self.job.dev_items:
            return
        if self.acc.is_main_process:
            student = self._unwrapped.student
            metrics = self._dev_metrics(student)
            self.log.log({"step": state.global_step, "stage": stage.name, "split": "dev", **metrics})
            value = metrics[self.job.main_metric]
            better = state.best_metric is None or (
                value > state.best_metric if higher_is_better(self.job.main_metric) else value < state.best_metric
            )
            if better:
                state.best_metric = value
                self.dev_metrics = metrics
                self.job.save_student(student, self.job.output_dir / self.job.model_dirname)
        self.acc.wait_for_everyone()

    def _dev_metrics(self, student: nn.Module) -> dict[str, float]:
        if self.job.evaluate is not None:
            return self.job.evaluate(student)
        assert self.job.dev_items is not None
        return evaluate(
            student,
            self.job.dev_items,
            self.job.collate,
            self.cfg.eval_batch_size,
            self.acc.device,
            self.job.regression,
            self.job.metrics,
            self.job.num_labels,
        )

    @torch.no_grad()
    def _dev_stage_loss(self, stage: Stage) -> float:
        """Mean stage loss on the dev set (the signal for 'train this layer until its dev loss plateaus')."""
        self.module.eval()
        student_taps = self._unwrapped.student_taps(stage)
        total, count = 0.0, 0
        items = self.job.dev_items or []
        for indices in length_sorted_batches(items, self.cfg.eval_batch_size):
            batch = {k: v.to(self.acc.device) for k, v in self.job.collate([items[i] for i in indices]).items()}
            teacher = self._teacher_signals(stage, batch, list(indices), "dev")
            with self.acc.autocast():
                loss, _ = self._unwrapped(batch, stage, student_taps, teacher)
            total, count = total + float(loss) * len(indices), count + len(indices)
        self.module.train()
        return total / max(count, 1)

    def _checkpoint(self, state: TrainState, scheduler: Any) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            save_checkpoint(self.ckpt_dir, self._unwrapped, self.optimizer, scheduler, state)
        self.acc.wait_for_everyone()

    def _restore(self) -> tuple[TrainState, dict[str, Any] | None]:
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return TrainState(), None
        state, saved = load_checkpoint(path, self._unwrapped, self.acc.process_index)
        set_rng_state(saved["rng"])
        return state, saved

    def _finish(self, state: TrainState, finished: bool) -> TrainResult:
        if self.acc.is_main_process and (not self.job.dev_items or state.best_metric is None):
            self.job.save_student(self._unwrapped.student, self.job.output_dir / self.job.model_dirname)
        self.acc.wait_for_everyone()
        self.log.close()
        return TrainResult(state.global_step, state.best_metric, self.dev_metrics, finished)


def _length(item: dict[str, Any]) -> int:
    """An item's length for length bucketing; fixed-size inputs (images) have none and count as 1."""
    ids = item.get("input_ids")
    return len(ids) if ids is not None else 1


class _Meter:
    """Running averages of the logged loss parts, and throughput in samples per second."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._steps = 0
        self._samples = 0
        self._start = time.perf_counter()

    def add(self, parts: dict[str, Tensor], samples: int) -> None:
        for key, value in parts.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._steps += 1
        self._samples += samples

    def flush(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        record = {key: float(value) / max(self._steps, 1) for key, value in self._sums.items()}
        record["samples_per_s"] = self._samples / elapsed
        self.__init__()
        return record
