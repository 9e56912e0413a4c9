"""Lifelong and multi-task KD on four sentence tasks met in the order SST-2 -> AG News -> CoLA -> RTE.

One MiniLM-derived student (``shrink`` of MiniLM keeping --layers layers) learns every task, with one head per task:

  sequential fine-tuning      one task after another, gold labels only (forgetting baseline)
  sequential FT + replay      the same, with --replay stored examples of every earlier task (gold labels)
  L2KD                        one task after another, each taught by its own fine-tuned teacher (Chuang et al. 2020)
  L2KD + replay               L2KD with the stored examples of earlier tasks replayed on gold labels
  multi-task (gold)           every task at once, gold labels only: the upper bound of the sequential rows
  BAM                         every task at once from the single-task teachers, teacher annealing (Clark et al. 2019)

Teachers are MiniLM fine-tuned once per task on the same training subset (--train examples, subset seed 0) and
shared by every method and seed (bench/work/lifelong/teachers); --reuse-teachers takes the full-data SST-2 and CoLA
teachers of bench/work/{sst2,cola}/teacher instead where they exist. After every step the student is scored on
the dev subset (--dev examples) of every task. Results go to bench/results/lifelong.json after every run (an
interrupted invocation resumes there with the same settings) and the tables to bench/results/lifelong.md.

    python bench/lifelong.py --threads 1                                  # 3 seeds, 2000 train / 500 dev per task
    python bench/lifelong.py --train 64 --dev 32 --epochs 1 --seeds 0 --tag smoke    # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from common import machine, summarise

import kdlab

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TASKS = ["sst2", "agnews", "cola", "rte"]
REUSABLE = {"sst2": ROOT / "bench/work/sst2/teacher/model", "cola": ROOT / "bench/work/cola/teacher/model"}

METHODS: dict[str, dict[str, Any]] = {  # name -> (mode, distill section, replay?)
    "sequential fine-tuning": {"mode": "sequential", "distill": {"method": "none"}, "replay": False},
    "sequential FT + replay": {"mode": "sequential", "distill": {"method": "none"}, "replay": True},
    "L2KD": {"mode": "sequential", "distill": {"method": "vanilla", "temperature": 2.0, "alpha": 0.5}, "replay": False},
    "L2KD + replay": {
        "mode": "sequential",
        "distill": {"method": "vanilla", "temperature": 2.0, "alpha": 0.5},
        "replay": True,
    },
    "multi-task (gold)": {"mode": "joint", "distill": {"method": "none"}, "replay": False},
    "BAM": {
        "mode": "joint",
        "distill": {"method": "vanilla", "temperature": 1.0, "alpha": 1.0, "alpha_schedule": "linear"},
        "replay": False,
    },
}


def data_root() -> str:
    return os.environ.get("KDLAB_DATA_ROOT", "").strip() or "/work/shared/data"


def base_train(epochs: int, seed: int) -> dict:
    return {
        "epochs": epochs,
        "batch_size": 32,
        "lr": 1e-4,
        "seed": seed,
        "progress_bar": False,
        "checkpoint_every_steps": None,
        "log_every_steps": 20,
    }


def teacher(task: str, args: argparse.Namespace, work: Path) -> str:
    """A fine-tuned MiniLM for ``task`` (trained once, kept in the work folder) and its dev scores."""
    reused = REUSABLE.get(task)
    if args.reuse_teachers and reused is not None and (reused / "config.json").is_file():
        folder = reused
    else:
        out = work / "teachers" / task
        folder = out / "model"
        if not (out / "done").is_file():
            spec = {
                "task": {
                    "name": task,
                    "root": data_root(),
                    "max_length": args.max_length,
                    "max_train_examples": args.train,
                    "max_dev_examples": args.dev,
                },
                "teacher": {"model": "minilm"},
                "train": base_train(args.teacher_epochs, 0),
                "output": {"dir": str(out), "overwrite": True},
            }
            kdlab.finetune(spec)
            shutil.rmtree(out / "checkpoints", ignore_errors=True)  # disk: only the model is used
            (out / "done").write_text("finished\n")
    return str(folder)


def recipe(method: str, seed: int, teachers: dict[str, str], args: argparse.Namespace, work: Path) -> dict:
    setting = METHODS[method]
    uses_teachers = setting["distill"]["method"] != "none"
    out = work / "runs" / method.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "plus")
    return {
        "task": {"name": TASKS[0], "root": data_root(), "max_length": args.max_length},
        "teacher": {"model": "minilm"},
        "student": {"kind": "shrink", "layers": f"uniform:{args.layers}"},
        "distill": setting["distill"],
        "multitask": {
            "tasks": TASKS,
            "mode": setting["mode"],
            "teachers": teachers if uses_teachers else {},
            "replay": args.replay if setting["replay"] else 0,
            "max_train_examples": args.train,
            "max_dev_examples": args.dev,
        },
        "train": base_train(args.epochs, seed),
        "output": {"dir": str(out / f"seed{seed}"), "overwrite": True},
    }


def run(spec: dict) -> dict:
    start = time.perf_counter()
    summary = kdlab.distill(spec)
    record = summary.extra["lifelong"]
    return {"lifelong": record, "seconds": time.perf_counter() - start}


def settings(args: argparse.Namespace) -> dict:
    keys = ("train", "dev", "epochs", "teacher_epochs", "replay", "layers", "max_length", "reuse_teachers")
    return {key: getattr(args, key) for key in keys}


def load_results(path: Path, wanted: dict) -> dict:
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") == wanted:
            return saved
        print(f"{path} holds results of other settings ({saved.get('settings')}); starting afresh", flush=True)
    return {"settings": wanted, "tasks": TASKS, "teachers": {}, "methods": {}}


# ----------------------------------------------------------------------------------------------- tables
def _cell(values: list[float]) -> str:
    stat = summarise(values)
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def table(res: dict) -> str:
    s = res["settings"]
    teachers = ", ".join(
        f"{task} {100 * t['accuracy']:.1f}" + (f" (MCC {100 * t['mcc']:.1f})" if "mcc" in t else "")
        for task, t in res["teachers"].items()
    )
    lines = [
        f"### Lifelong / multi-task KD: {' → '.join(res['tasks'])} ({s['train']} train / {s['dev']} dev examples "
        f"per task, {s['epochs']} epochs per step, student: MiniLM layers uniform:{s['layers']}, "
        f"replay {s['replay']} per earlier task)",
        "",
        f"Teachers (MiniLM fine-tuned per task, dev accuracy): {teachers}." if teachers else "",
        "",
        "Dev accuracy (%) of every task after each step, mean ± std over seeds; avg = mean accuracy over all tasks.",
        "",
    ]
    header = ["method", "after", *res["tasks"], "avg"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, runs in res["methods"].items():
        seeds = list(runs.values())
        for k, step in enumerate(seeds[0]["lifelong"]["steps"]):
            cells = [method if k == 0 else "", step["task"]]
            for task in res["tasks"]:
                cells.append(_cell([r["lifelong"]["steps"][k]["dev"][task]["accuracy"] for r in seeds]))
            avg = [
                sum(r["lifelong"]["steps"][k]["dev"][t]["accuracy"] for t in res["tasks"]) / len(res["tasks"])
                for r in seeds
            ]
            lines.append("| " + " | ".join([*cells, _cell(avg)]) + " |")
    lines += ["", "Final average over all tasks (main metric: accuracy, MCC for CoLA) and time per run:", ""]
    lines += ["| method | final avg (main) | final avg accuracy | seeds | s/run |", "|---|---|---|---|---|"]
    for method, runs in res["methods"].items():
        seeds = list(runs.values())
        main = _cell([r["lifelong"]["final"]["average"] for r in seeds])
        acc = _cell([r["lifelong"]["final"]["average_accuracy"] for r in seeds])
        secs = summarise([r["seconds"] for r in seeds])["mean"]
        lines.append(f"| {method} | {main} | {acc} | {len(seeds)} | {secs:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=2000, help="training examples per task")
    parser.add_argument("--dev", type=int, default=500, help="dev examples per task")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per step (joint: over the union)")
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--replay", type=int, default=50, help="stored examples of each earlier task")
    parser.add_argument("--layers", type=int, default=2, help="student layers (uniform:N of MiniLM's 6)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--reuse-teachers", action="store_true", help="full-data SST-2 / CoLA teachers of bench/work")
    parser.add_argument("--tag", default="", help="suffix of the work folder and result files (e.g. smoke)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = "lifelong" + (f"-{args.tag}" if args.tag else "")
    work = ROOT / "bench" / "work" / name
    path = RESULTS / f"{name}.json"
    res = load_results(path, settings(args))
    teachers: dict[str, str] = {}
    if any(METHODS[m]["distill"]["method"] != "none" for m in args.methods):
        for task in TASKS:
            teachers[task] = teacher(task, args, work)
    for method in args.methods:
        for seed in args.seeds:
            runs = res["methods"].setdefault(method, {})
            if str(seed) in runs:
                continue
            result = run(recipe(method, seed, teachers, args, work))
            runs[str(seed)] = result
            if not res["teachers"] and result["lifelong"]["teachers"]:
                res["teachers"] = result["lifelong"]["teachers"]
            final = result["lifelong"]["final"]
            print(f"{method} seed {seed}: final average {final['average']:.4f} ({result['seconds']:.0f} s)", flush=True)
            res.update(command=" ".join(["python bench/lifelong.py", *sys.argv[1:]]), date=str(date.today()))
            res["machine"] = machine()
            RESULTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(res, indent=2))
    text = table(res)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
