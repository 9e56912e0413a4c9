"""Helpers shared by the benchmark scripts: mean ± std, the machine line, fixed training subsets as files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch


def summarise(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}"


RESULTS = Path(__file__).resolve().parent / "results"


def provenance(name: str) -> dict:
    """Where a result comes from: the benchmark, today's date, the machine and the command that gave it."""
    return {
        "benchmark": name,
        "date": date.today().isoformat(),
        "machine": machine(),
        "command": " ".join([f"python bench/{name}.py", *sys.argv[1:]]),
    }


def write_results(name: str, results: dict, table: str) -> None:
    """``bench/results/<name>.json`` and ``.md``, each written atomically (an interrupted run leaves the old pair)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(results, indent=2) + "\n"), (".md", table + "\n")):
        tmp = RESULTS / f"{name}{suffix}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, RESULTS / f"{name}{suffix}")


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


def once(out: Path, train: Callable[[], dict]) -> dict:
    """Run ``train`` unless ``out`` already holds its result (benchmarks resume after a crash, and parallel
    processes that split the seeds share one results folder). The result is written atomically after the run."""
    done = out / "bench_result.json"
    if done.is_file():
        return {**json.loads(done.read_text()), "reused": True}
    start = time.perf_counter()
    result = {**train(), "seconds": time.perf_counter() - start}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, done)
    return result


def cell(values: list[float], digits: int = 4) -> str:
    """``mean ± std (n)`` of the finished seeds, or a dash."""
    if not values:
        return "–"
    stat = summarise(values)
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" + (f" (n={len(values)})" if len(values) < 3 else "")
