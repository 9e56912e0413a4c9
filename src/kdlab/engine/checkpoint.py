"""Training checkpoints that resume exactly: weights, optimizer, scheduler, RNG states, stage/epoch/batch position.

A checkpoint is a folder ``checkpoints/step-000123`` written atomically (temporary folder + rename), so a crash never
leaves a half-written checkpoint that looks usable. Weights are safetensors; optimizer, scheduler and RNG states are
``torch.save`` files that hold only tensors and plain Python values and are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from kdlab.io import atomic_dir

KEEP_LAST = 2


@dataclass
class TrainState:
    """Where training is: enough to continue at the next batch as if it had never stopped."""

    stage: int = 0
    epoch: int = 0  # epoch within the stage
    batch: int = 0  # batches of this epoch already consumed
    global_step: int = 0  # optimizer steps in total
    micro_step: int = 0  # forward/backward passes in total
    best_metric: float | None = None
    plateau_best: float | None = None
    plateau_bad_epochs: int = 0


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    root: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    process_index: int = 0,
) -> Path:
    """Write ``root/step-N`` atomically and keep only the newest checkpoints."""
    target = root / f"step-{state.global_step:09d}"
    with atomic_dir(target) as tmp:
        save_model(module, str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
        torch.save(rng_state(), tmp / f"rng-{process_index}.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
    for old in sorted(root.glob("step-*"))[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path, module: nn.Module, process_index: int = 0) -> tuple[TrainState, dict[str, Any]]:
    """Load weights into ``module``; return the train state and the optimizer/scheduler states to apply."""
    load_model(module, str(path / "model.safetensors"))
    states = torch.load(path / "optim.pt", weights_only=True)
    rng_file = path / f"rng-{process_index}.pt"
    if not rng_file.exists():
        rng_file = path / "rng-0.pt"
    states["rng"] = torch.load(rng_file, weights_only=True)
    state = TrainState(**json.loads((path / "state.json").read_text(encoding="utf-8")))
    return state, states


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value
