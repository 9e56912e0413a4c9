"""What every training command does around the Trainer: the Accelerator, the output folder, the run summary."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs

from kdlab.commands.build import clear_output, prepare_output
from kdlab.config import Recipe, TrainConfig, recipe_to_yaml
from kdlab.engine.trainer import TrainResult
from kdlab.errors import UserError
from kdlab.io import atomic_write_text

# Keys that may change between a run and its --resume (they do not change what is trained).
_RESUMABLE_CHANGES = {
    ("train", "max_steps"),
    ("train", "progress_bar"),
    ("output", "overwrite"),
    ("cache", "verify"),
}


@dataclass
class RunSummary:
    output_dir: Path
    model_dir: Path
    result: TrainResult
    extra: dict[str, Any] = field(default_factory=dict)


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    # Layer-wise stages leave the upper student layers and unused projections without gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # Accelerate only forms a CPU process group when told to use the CPU; without this, processes started by
    # `accelerate launch --multi_gpu` or `torchrun` on a machine without GPUs would each train alone.
    cpu_ddp = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Accelerate keeps one global state per process; several runs in one process (the Python API, benchmarks)
    # may differ in mixed precision, so each run starts from a fresh one. The process group itself is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision=cfg.mixed_precision, kwargs_handlers=[ddp], cpu=cpu_ddp)


def claim_output(recipe: Recipe, resume: bool) -> Path:
    """Last step before training: the output folder is cleared (or checked for resuming) and the recipe saved."""
    out = prepare_output(recipe, resume, check_busy=_is_main_process())
    recipe_file = out / "recipe.yaml"
    if resume:
        _check_same_recipe(recipe, recipe_file)
    elif _is_main_process():
        clear_output(out)
    if _is_main_process():
        atomic_write_text(recipe_file, recipe_to_yaml(recipe))
    return out


def _check_same_recipe(recipe: Recipe, recipe_file: Path) -> None:
    if not recipe_file.is_file():
        return
    saved = yaml.safe_load(recipe_file.read_text(encoding="utf-8"))
    now = recipe.model_dump(mode="json")
    for section, values in now.items():
        for key, value in (values or {}).items():
            if (section, key) in _RESUMABLE_CHANGES:
                continue
            if saved.get(section, {}).get(key) != value:
                raise UserError(
                    f"the run in {recipe_file.parent} was started with a different {section}.{key} "
                    f"({saved.get(section, {}).get(key)!r}, now {value!r})",
                    key=f"{section}.{key}",
                    fix="resume with the recipe the run was started with (its copy is in recipe.yaml)",
                )


def _is_main_process() -> bool:
    # Accelerate sets RANK/LOCAL_RANK under `accelerate launch`; the Accelerator does not exist yet here.
    return os.environ.get("RANK", "0") == "0"
