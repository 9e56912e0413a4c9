"""Internal-representation KD benchmark (Aguilar et al. 2020 setting, scaled to this CPU).

Fine-tuned MiniLM teacher (6 layers) -> 2-layer student (teacher layers 3 and 6 kept, weights copied) on SST-2 and
CoLA (the low-data case). Rows: student trained alone on gold labels, soft-label KD, internal KD with all matched
layers at once, PID and SID (configs/<task>/{alone,vanilla,internal,pid,sid}.yaml), each over several seeds;
mean ± std of the dev metric (best epoch, and last epoch), plus teacher/student parameter and CPU-latency ratios.

    python bench/internal_kd.py                       # both tasks, 3 seeds (about 1.5 h on 2 CPU cores)
    python bench/internal_kd.py --tasks cola --seeds 0

Writes bench/results/internal_kd.json and bench/results/internal_kd.md; reads ../shared/data (or $KDLAB_DATA_ROOT).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

import kdlab

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work"
METHODS = ("alone", "vanilla", "internal", "pid", "sid")
LABELS = {
    "alone": "student alone (gold labels)",
    "vanilla": "soft-label KD",
    "internal": "internal KD, all layers at once",
    "pid": "PID (progressive)",
    "sid": "SID (stacked)",
}
# Scale: what fits this 2-core CPU. The teacher sees the whole training set; students see `train_examples`.
SETTINGS = {
    "sst2": {"teacher_epochs": 1, "train_examples": 10000, "dev_examples": 2000, "epochs": 2},
    "cola": {"teacher_epochs": 3, "train_examples": None, "dev_examples": None, "epochs": 3},
}


def common(task: str) -> list[str]:
    s = SETTINGS[task]
    out = ["train.progress_bar=false", "train.checkpoint_every_steps=null", "output.overwrite=true"]
    if s["dev_examples"]:
        out.append(f"task.max_dev_examples={s['dev_examples']}")
    return out


def teacher(task: str, reuse: bool) -> tuple[Path, dict]:
    out = WORK / task / "teacher"
    if not (reuse and (out / "model" / "config.json").is_file()):
        start = time.perf_counter()
        kdlab.finetune(
            ROOT / "configs" / task / "teacher.yaml",
            [*common(task), f"output.dir={out}", f"train.epochs={SETTINGS[task]['teacher_epochs']}"],
        )
        print(f"[{task}] teacher fine-tuned in {time.perf_counter() - start:.0f} s", flush=True)
    ev = kdlab.evaluate(ROOT / "configs" / task / "teacher.yaml", common(task), model=str(out / "model"))
    return out / "model", ev.__dict__


def student_run(task: str, method: str, seed: int, teacher_dir: Path) -> dict:
    out = WORK / task / f"{method}-seed{seed}"
    s = SETTINGS[task]
    overrides = [
        *common(task),
        f"teacher.model={teacher_dir}",
        f"output.dir={out}",
        f"train.seed={seed}",
        f"train.epochs={s['epochs']}",
    ]
    if s["train_examples"]:
        overrides.append(f"task.max_train_examples={s['train_examples']}")
    start = time.perf_counter()
    run = kdlab.distill(ROOT / "configs" / task / f"{method}.yaml", overrides)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in records if r["split"] == "dev" and "stage_loss" not in r]
    main = next(k for k in ("mcc", "accuracy") if k in dev[-1])
    return {"seed": seed, "best": run.result.best_metric, "last": dev[-1][main], "seconds": seconds, "metric": main}


def summarise(values: list[float]) -> dict:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def run_task(task: str, seeds: list[int], methods: list[str], reuse: bool) -> dict:
    teacher_dir, teacher_eval = teacher(task, reuse)
    rows = {}
    for method in methods:
        runs = []
        for seed in seeds:
            runs.append(student_run(task, method, seed, teacher_dir))
            print(
                f"[{task}] {method} seed {seed}: best {runs[-1]['best']:.4f} ({runs[-1]['seconds']:.0f} s)", flush=True
            )
        rows[method] = {
            "best": summarise([r["best"] for r in runs]),
            "last": summarise([r["last"] for r in runs]),
            "seconds": summarise([r["seconds"] for r in runs]),
            "runs": runs,
        }
    student_eval = kdlab.evaluate(
        ROOT / "configs" / task / "vanilla.yaml",
        common(task),
        model=str(WORK / task / f"{methods[0]}-seed{seeds[0]}" / "student"),
    ).__dict__
    return {
        "settings": SETTINGS[task],
        "metric": next(iter(rows.values()))["runs"][0]["metric"],
        "teacher": teacher_eval,
        "student": student_eval,
        "parameter_ratio": teacher_eval["parameters"] / student_eval["parameters"],
        "latency_ratio": teacher_eval["ms_per_batch"] / student_eval["ms_per_batch"],
        "rows": rows,
    }


def markdown(results: dict) -> str:
    lines = []
    for task, r in results["tasks"].items():
        metric = r["metric"]
        t = r["teacher"]
        lines += [
            f"**{task}** (dev {metric}; students: {r['settings']['train_examples'] or 'all'} training examples, "
            f"{r['settings']['epochs']} epochs; mean ± std over seeds {results['seeds']})",
            "",
            f"| model | dev {metric}, best epoch | dev {metric}, last epoch | train time (s) |",
            "|---|---|---|---|",
            f"| teacher: MiniLM, 6 layers, {t['parameters'] / 1e6:.1f}M params | {t['metrics'][metric]:.4f} | | |",
        ]
        for method, row in r["rows"].items():
            b, last, sec = row["best"], row["last"], row["seconds"]
            lines.append(
                f"| {LABELS[method]} | {b['mean']:.4f} ± {b['std']:.4f} | {last['mean']:.4f} ± {last['std']:.4f} "
                f"| {sec['mean']:.0f} |"
            )
        lines += [
            "",
            f"Student: 2 layers, {r['student']['parameters'] / 1e6:.1f}M params; teacher/student parameters "
            f"{r['parameter_ratio']:.2f}×, CPU latency per batch of {r['student']['batch_size']} "
            f"{r['latency_ratio']:.2f}× ({t['ms_per_batch']:.1f} vs {r['student']['ms_per_batch']:.1f} ms).",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "cola"], choices=sorted(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--reuse-teacher", action="store_true", help="keep an already fine-tuned teacher")
    args = parser.parse_args()
    results = {
        "benchmark": "internal_kd",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "seeds": args.seeds,
        "tasks": {},
    }
    for task in args.tasks:
        results["tasks"][task] = run_task(task, args.seeds, args.methods, args.reuse_teacher)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "internal_kd.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "internal_kd.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
