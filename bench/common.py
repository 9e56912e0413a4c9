"""Helpers shared by the benchmark scripts: mean ± std, the machine line, fixed training subsets as files."""

from __future__ import annotations

import platform
import statistics
from pathlib import Path

import torch


def summarise(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}"


def train_subset_file(task: str, count: int, folder: Path) -> str:
    """A fixed subset of a ready task's training split (the same for every seed), in the layout that task reads.

    One teacher cache then covers every run, whatever its training seed.
    """
    from kdlab.data import load_examples, ready_task

    path = folder / f"{task}-train-{count}.tsv"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        examples = load_examples(ready_task(task), "train", count, seed=0)
        if task == "cola":  # GLUE CoLA: source, label, notation, sentence; no header
            lines = [f"subset\t{e.label}\t\t{e.text}" for e in examples]
        else:
            lines = ["sentence\tlabel", *(f"{e.text}\t{e.label}" for e in examples)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)
