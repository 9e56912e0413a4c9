"""What a teacher cache costs on disk, and what training from one costs in memory.

1. Bytes per example (SST-2, fine-tuned MiniLM teacher, 2,000 training examples, max length 64) for: the logits
   alone, the logits' top-1 (+ rest), full layer-wise hidden-state knowledge (2 layers, every token, all 384
   dimensions) in float32 and float16, and the paper's tiny slice (1 layer x 10 tokens x 10 % width).
2. Peak resident memory of a training process (the same 10,000 training examples, 150 steps) reading from a cache of
   10,000 vs 60,615 examples (the whole SST-2 training set) of every-token hidden states, float16: a store that
   memory-maps shards and reads rows on demand keeps this flat.

    python bench/cache_storage.py          # about 8 minutes on 2 CPU cores

Writes bench/results/cache_storage.{json,md}. Needs the SST-2 teacher of bench/internal_kd.py.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch

import kdlab

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work" / "storage"
TEACHER = ROOT / "bench" / "work" / "sst2" / "teacher" / "model"


def hidden(teacher_layer: int, student_layer: int, tokens: str = "all", width: float = 1.0) -> dict:
    return {
        "teacher": f"bert.encoder.layer.{teacher_layer}",
        "student": f"bert.encoder.layer.{student_layer}",
        "loss": "mse",
        "tokens": tokens,
        "width": width,
        "width_mask": "importance",
    }


VARIANTS = {
    "logits (2 classes, float32)": ({"method": "vanilla"}, "float32"),
    "top-1 log-probability + rest": ({"method": "vanilla", "logit_topk": 1}, "float32"),
    "full HSK: 2 layers x all tokens x 100 %, float32": (
        {"method": "internal", "matches": [hidden(2, 0), hidden(5, 1)]},
        "float32",
    ),
    "full HSK, float16": ({"method": "internal", "matches": [hidden(2, 0), hidden(5, 1)]}, "float16"),
    "1 layer x 10 tokens x 10 % (+ logits), float32": (
        {"method": "internal", "matches": [hidden(5, 1, "attention_no_sep:10", 0.1)]},
        "float32",
    ),
}


def recipe(name: str, distill: dict, dtype: str, train_file: str | None, examples: int | None) -> dict:
    task: dict = {"name": "sst2", "max_length": 64, "max_dev_examples": 200}
    if train_file:
        task["train"] = train_file
    if examples:
        task["max_train_examples"] = examples
    return {
        "task": task,
        "teacher": {"model": str(TEACHER)},
        "student": {"kind": "shrink", "layers": [2, 5]},
        "distill": {"temperature": 2.0, "alpha": 0.5, **distill},
        "train": {"epochs": 1, "batch_size": 32, "progress_bar": False, "checkpoint_every_steps": None},
        "cache": {"dir": str(WORK / name / "cache"), "dtype": dtype},
        "output": {"dir": str(WORK / name / "run"), "overwrite": True},
    }


def bytes_per_example() -> dict:
    rows = {}
    for n, (label, (distill, dtype)) in enumerate(VARIANTS.items()):
        summary = kdlab.cache(recipe(f"v{n}", distill, dtype, None, 2000), overwrite=True, progress=False)
        rows[label] = {"bytes_per_example": summary.bytes_per_example, "examples": summary.examples}
        print(f"{label}: {summary.bytes_per_example:,.0f} bytes per example", flush=True)
    return rows


def subset_file(count: int) -> str:
    from kdlab.data import load_examples, ready_task

    path = WORK / f"train-{count}.tsv"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        examples = load_examples(ready_task("sst2"), "train", count, seed=0)
        path.write_text("sentence\tlabel\n" + "".join(f"{e.text}\t{e.label}\n" for e in examples), encoding="utf-8")
    return str(path)


_CHILD = """
import json, resource, sys
import kdlab
spec = json.loads(sys.argv[1])
kdlab.distill(spec)
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory() -> dict:
    """Same training data (10k examples) read from a 10k-example and from a whole-training-set cache."""
    distill = {"method": "internal", "matches": [hidden(5, 1)]}
    train_10k = subset_file(10_000)
    out = {}
    for name, cache_train in (("10k", train_10k), ("60k", None)):
        cache_spec = recipe(f"mem-{name}", distill, "float16", cache_train, None)
        summary = kdlab.cache(cache_spec, overwrite=True, progress=False)
        train_spec = recipe(f"mem-{name}", distill, "float16", train_10k, None)
        train_spec["train"]["max_steps"] = 150
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(train_spec)], capture_output=True, text=True, check=True
        )
        peak = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("PEAK_KIB")))
        out[name] = {"cache_examples": summary.examples, "cache_bytes": summary.bytes, "peak_rss_bytes": peak * 1024}
        print(f"cache of {summary.examples} examples ({summary.bytes / 2**20:.0f} MiB): peak RSS {peak / 1024:.0f} MiB")
    return out


def markdown(results: dict) -> str:
    lines = ["| knowledge stored per example | bytes per example |", "|---|---|"]
    for label, row in results["bytes_per_example"].items():
        lines.append(f"| {label} | {row['bytes_per_example']:,.0f} |")
    lines += ["", "| training reads from | cache size | peak RSS of the training process |", "|---|---|---|"]
    for row in results["peak_memory"].values():
        lines.append(
            f"| cache of {row['cache_examples']:,} examples | {row['cache_bytes'] / 2**20:,.0f} MiB "
            f"| {row['peak_rss_bytes'] / 2**20:,.0f} MiB |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    results = {
        "benchmark": "cache_storage",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "bytes_per_example": bytes_per_example(),
        "peak_memory": peak_memory(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cache_storage.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "cache_storage.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
