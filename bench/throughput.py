"""Framework overhead: samples/s of a kdlab KD step vs the same step as a plain PyTorch loop, in the same run.

Both sides train the same 2-layer student (shrunk from MiniLM) with soft-label KD from the same MiniLM teacher on the
same batches in the same order (packaged SST-2 sample, dynamic padding, length buckets), with AdamW, a linear
schedule and gradient clipping. kdlab's number is its own training loop (`kdlab.distill`, progress bar off), read
from the samples/s it logs; the plain loop is timed the same way. Runs alternate (kdlab, plain, kdlab, ...) so that
machine noise hits both alike.

    python bench/throughput.py --repeats 3 --steps 60
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

import kdlab
from kdlab.commands.build import build_student, load_data, load_teacher, task_spec
from kdlab.config import load_recipe
from kdlab.data import EpochBatches
from kdlab.losses import kd_mix

RESULTS = Path(__file__).parent / "results"
LOG_EVERY = 10


def recipe(out: str, teacher: str, steps: int):
    return load_recipe(
        {
            "task": {"name": "sst2-sample", "max_length": 64},
            "teacher": {"model": teacher},
            "student": {"kind": "shrink", "layers": [2, 5]},
            "distill": {"method": "vanilla", "temperature": 2.0, "alpha": 0.5},
            "train": {
                "epochs": 1,
                "batch_size": 32,
                "lr": 1e-4,
                "max_steps": steps,
                "log_every_steps": LOG_EVERY,
                "checkpoint_every_steps": None,
                "progress_bar": False,
                "seed": 0,
            },
            "output": {"dir": out, "overwrite": True},
        }
    )


def kdlab_samples_per_s(teacher: str, steps: int, workdir: Path) -> float:
    out = workdir / "kdlab"
    kdlab.distill(recipe(str(out), teacher, steps))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if r["split"] == "train"]
    return statistics.mean(rates[1:])  # the first interval includes warm-up


def plain_samples_per_s(teacher_name: str, steps: int) -> float:
    """The same KD step, written as the loop one would write by hand."""
    r = recipe("unused", teacher_name, steps)
    torch.manual_seed(0)
    spec = task_spec(r.task)
    teacher, tokenizer = load_teacher(r, spec, attention=False)
    student, tokenizer = build_student(r, teacher, tokenizer, spec, attention=False)
    data = load_data(spec, r.task, tokenizer, seed=0)
    order = EpochBatches([len(x["input_ids"]) for x in data.train], 32, seed=0).for_epoch(0)[:steps]
    teacher.eval().requires_grad_(False)
    student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * len(order)), len(order))
    rates, samples, start = [], 0, time.perf_counter()
    for step, indices in enumerate(order, start=1):
        batch = data.collate([data.train[i] for i in indices])
        labels = batch.pop("labels")
        with torch.inference_mode():
            teacher_logits = teacher(**batch).logits
        loss = kd_mix(student(**batch).logits, teacher_logits.clone(), labels, temperature=2.0, alpha=0.5)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        samples += len(indices)
        if step % LOG_EVERY == 0:
            float(loss.detach())  # kdlab's logger reads the loss at this point too
            rates.append(samples / (time.perf_counter() - start))
            samples, start = 0, time.perf_counter()
    return statistics.mean(rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="minilm", help="teacher model (speed does not depend on its head)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    kd, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            kd.append(kdlab_samples_per_s(args.teacher, args.steps, Path(tmp)))
            plain.append(plain_samples_per_s(args.teacher, args.steps))
            print(f"kdlab {kd[-1]:.1f} samples/s   plain PyTorch {plain[-1]:.1f} samples/s", flush=True)
    overhead = [p / k - 1 for k, p in zip(kd, plain, strict=True)]
    result = {
        "benchmark": "throughput",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "setup": "MiniLM teacher -> 2-layer student, soft-label KD, SST-2 sample, batch 32, max_length 64",
        "steps_per_run": args.steps,
        "kdlab_samples_per_s": kd,
        "plain_samples_per_s": plain,
        "overhead_mean": statistics.mean(overhead),
        "overhead_std": statistics.stdev(overhead) if len(overhead) > 1 else 0.0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    table = (
        "| loop | samples/s (mean ± std) |\n|---|---|\n"
        f"| plain PyTorch | {statistics.mean(plain):.1f} ± {statistics.stdev(plain) if len(plain) > 1 else 0:.1f} |\n"
        f"| kdlab | {statistics.mean(kd):.1f} ± {statistics.stdev(kd) if len(kd) > 1 else 0:.1f} |\n"
        f"| kdlab overhead | {100 * result['overhead_mean']:.1f} % ± {100 * result['overhead_std']:.1f} % |\n"
    )
    (RESULTS / "throughput.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
