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

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

from common import machine, train_subset_file

import kdlab
import kdlab.commands.cache

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


# Resident memory has two parts: anonymous (the process's own allocations) and file-backed (pages of memory-mapped
# shards, which the kernel can drop at any time). The peak of each is sampled from /proc while training runs.
_CHILD = """
import json, sys, threading, time
import kdlab
import kdlab.commands.cache
peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
def sample():
    while True:
        for line in open("/proc/self/status"):
            name = line.split(":")[0]
            if name in peaks:
                peaks[name] = max(peaks[name], int(line.split()[1]))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
kdlab.distill(json.loads(sys.argv[1]))
time.sleep(0.1)
print("PEAKS_KIB", json.dumps(peaks))
"""


def peak_memory(reuse: bool) -> dict:
    """Same training data (10k examples) read from a 10k-example and from a whole-training-set cache."""
    distill = {"method": "internal", "matches": [hidden(5, 1)]}
    train_10k = train_subset_file("sst2", 10_000, WORK)
    out = {}
    for name, cache_train in (("10k", train_10k), ("60k", None)):
        cache_spec = recipe(f"mem-{name}", distill, "float16", cache_train, None)
        if reuse and (Path(cache_spec["cache"]["dir"]) / "manifest.json").is_file():
            manifest = json.loads((Path(cache_spec["cache"]["dir"]) / "manifest.json").read_text())
            summary = kdlab.commands.cache.CacheSummary(
                Path(cache_spec["cache"]["dir"]),
                manifest["examples"],
                sum(s["bytes"] for s in manifest["shards"]),
                0.0,
                [],
            )
        else:
            summary = kdlab.cache(cache_spec, overwrite=True, progress=False)
        train_spec = recipe(f"mem-{name}", distill, "float16", train_10k, None)
        train_spec["train"]["max_steps"] = 150
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(train_spec)], capture_output=True, text=True, check=True
        )
        line = next(line for line in done.stdout.splitlines() if line.startswith("PEAKS_KIB"))
        peaks = {k: v * 1024 for k, v in json.loads(line.split(" ", 1)[1]).items()}
        out[name] = {"cache_examples": summary.examples, "cache_bytes": summary.bytes, "peak_bytes": peaks}
        print(f"cache of {summary.examples} examples ({summary.bytes / 2**20:.0f} MiB): peaks {peaks}", flush=True)
    return out


def markdown(results: dict) -> str:
    lines = ["| knowledge stored per example | bytes per example |", "|---|---|"]
    for label, row in results["bytes_per_example"].items():
        lines.append(f"| {label} | {row['bytes_per_example']:,.0f} |")
    lines += [
        "",
        "| training (same 10k examples, 150 steps) reads from | cache size | peak anonymous memory "
        "| peak file-backed (mapped shard pages) | peak RSS |",
        "|---|---|---|---|---|",
    ]
    for row in results["peak_memory"].values():
        peak = row["peak_bytes"]
        lines.append(
            f"| cache of {row['cache_examples']:,} examples | {row['cache_bytes'] / 2**20:,.0f} MiB "
            + "".join(f"| {peak[k] / 2**20:,.0f} MiB " for k in ("RssAnon", "RssFile", "VmRSS"))
            + "|"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="store_true", help="reuse caches already written by an earlier run")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory part")
    args = parser.parse_args()
    previous = RESULTS / "cache_storage.json"
    results = {
        "benchmark": "cache_storage",
        "date": date.today().isoformat(),
        "machine": machine(),
        "bytes_per_example": json.loads(previous.read_text())["bytes_per_example"]
        if args.memory_only and previous.is_file()
        else bytes_per_example(),
        "peak_memory": peak_memory(args.reuse),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cache_storage.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "cache_storage.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
