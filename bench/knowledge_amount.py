"""How much hidden-state knowledge (HSK) does a student need? (Liu et al. 2021, "Marginal Utility Diminishes").

Fine-tuned MiniLM teacher (6 layers) -> 2-layer student (teacher layers 3 and 6 kept). Protocol of the paper:
an HSK stage (MSE between selected student and teacher hidden states, 1 epoch), then prediction distillation
(soft cross-entropy on the teacher's logits, T = 1, no gold labels, 2 epochs). The HSK grows along one dimension
at a time, the others kept full:
  depth   0, 1 (student top layer <- teacher layer 6), 2 layers (3->1, 6->2)
  length  10 tokens ranked by the teacher's [CLS] attention without [SEP] (sentences average ~25 tokens), all
  width   1 %, 10 % of the 384 dimensions (per-token importance mask: largest |teacher value|), all
plus the paper's joint tiny slice: 1 layer x 10 tokens x 10 % width. Every student trains from ONE teacher cache
per task (`kdlab cache`, all signals at once); the teacher is never loaded while students train.

    python bench/knowledge_amount.py                    # both tasks, 3 seeds (about 40 min on 2 CPU cores)
    python bench/knowledge_amount.py --tasks cola --seeds 0

Writes bench/results/knowledge_amount.{json,md,png}; needs the fine-tuned teachers of bench/internal_kd.py
(bench/work/<task>/teacher/model; fine-tuned here when missing) and ../shared/data (or $KDLAB_DATA_ROOT).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from pathlib import Path

from common import machine, summarise, train_subset_file

import kdlab

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work"
TEACHER_LAYER = {0: 2, 1: 5}  # student layer -> teacher layer (0-based), the layers the student was built from
SETTINGS = {
    "sst2": {"train_examples": 4000, "teacher_epochs": 1},
    "cola": {"train_examples": 5000, "teacher_epochs": 3},
}
# name -> (student layers matched, tokens, width); None = no HSK stage at all
POINTS: dict[str, tuple[tuple[int, ...], str, float] | None] = {
    "none": None,
    "depth 1": ((1,), "all", 1.0),
    "length 10": ((0, 1), "attention_no_sep:10", 1.0),
    "width 1%": ((0, 1), "all", 0.01),
    "width 10%": ((0, 1), "all", 0.1),
    "joint 1l x 10t x 10%": ((1,), "attention_no_sep:10", 0.1),
    "full": ((0, 1), "all", 1.0),
}
# Where each point sits along the dimension it varies, for the plot (fraction of the full HSK on that axis).
AXES = {
    "depth": [("none", 0.0), ("depth 1", 0.5), ("full", 1.0)],
    "length": [("none", 0.0), ("length 10", 10 / 25), ("full", 1.0)],
    "width": [("none", 0.0), ("width 1%", 0.01), ("width 10%", 0.1), ("full", 1.0)],
}


def matches(point: tuple[tuple[int, ...], str, float]) -> list[dict]:
    layers, tokens, width = point
    out = []
    for s in layers:
        match = {
            "teacher": f"bert.encoder.layer.{TEACHER_LAYER[s]}",
            "student": f"bert.encoder.layer.{s}",
            "loss": "mse",
            "tokens": tokens,
            "width": width,
            "width_mask": "importance",
            "stage": 0,
        }
        out.append(match)
    return out


def recipe(task: str, teacher_dir: Path, cache_dir: Path, point: str) -> dict:
    spec = POINTS[point]
    distill: dict = {"method": "vanilla", "temperature": 1.0, "alpha": 1.0}
    if spec is not None:
        distill.update(method="pid", stage_epochs=1, matches=matches(spec))
    task_cfg: dict = {"name": task, "max_length": 64}
    count = SETTINGS[task]["train_examples"]
    if count:
        task_cfg["train"] = train_subset_file(task, count, WORK / task / "hsk")
    return {
        "task": task_cfg,
        "teacher": {"model": str(teacher_dir)},
        "student": {"kind": "shrink", "layers": [2, 5]},
        "distill": distill,
        "train": {"epochs": 2, "batch_size": 32, "lr": 1e-4, "progress_bar": False, "checkpoint_every_steps": None},
        "cache": {"dir": str(cache_dir)},
        "output": {"dir": str(WORK / task / "hsk" / "run"), "overwrite": True},
    }


def build_cache(task: str, teacher_dir: Path) -> tuple[Path, dict]:
    """One cache holding every point's signals: the union of all matches, cached in one teacher pass."""
    cache_dir = WORK / task / "hsk" / "cache"
    every = [m for spec in POINTS.values() if spec is not None for m in matches(spec)]
    union = recipe(task, teacher_dir, cache_dir, "full")
    union["distill"].update(method="internal", matches=[{k: v for k, v in m.items() if k != "stage"} for m in every])
    summary = kdlab.cache(union, overwrite=True, progress=False)
    print(f"[{task}] cache: {summary.examples} examples, {summary.bytes / 2**20:.0f} MiB, {summary.seconds:.0f} s")
    return cache_dir, {"examples": summary.examples, "bytes": summary.bytes, "seconds": summary.seconds}


def teacher(task: str) -> Path:
    out = WORK / task / "teacher"
    if not (out / "model" / "config.json").is_file():
        kdlab.finetune(
            ROOT / "configs" / task / "teacher.yaml",
            [f"output.dir={out}", f"train.epochs={SETTINGS[task]['teacher_epochs']}", "train.progress_bar=false"],
        )
    return out / "model"


def run_task(task: str, seeds: list[int], points: list[str]) -> dict:
    teacher_dir = teacher(task)
    cache_dir, cache_info = build_cache(task, teacher_dir)
    rows = {}
    for point in points:
        values, seconds = [], []
        for seed in seeds:
            start = time.perf_counter()
            run = kdlab.distill(recipe(task, teacher_dir, cache_dir, point), [f"train.seed={seed}"])
            seconds.append(time.perf_counter() - start)
            values.append(run.result.best_metric)
            print(f"[{task}] {point} seed {seed}: {values[-1]:.4f} ({seconds[-1]:.0f} s)", flush=True)
        rows[point] = {**summarise(values), "values": values, "seconds": statistics.mean(seconds)}
    metric = "mcc" if task == "cola" else "accuracy"
    return {"metric": metric, "settings": SETTINGS[task], "cache": cache_info, "rows": rows}


def smallest_matching_full(rows: dict) -> str | None:
    """The first point (in increasing knowledge) whose mean reaches the full HSK's mean minus one std."""
    full = rows.get("full")
    if full is None:
        return None
    for point in ("joint 1l x 10t x 10%", "width 1%", "width 10%", "length 10", "depth 1"):
        if point in rows and rows[point]["mean"] >= full["mean"] - full["std"]:
            return point
    return "full"


def markdown(results: dict) -> str:
    lines = []
    for task, r in results["tasks"].items():
        n = r["settings"]["train_examples"] or "all"
        lines += [
            f"**{task}** (dev {r['metric']}, best epoch; {n} training examples; mean ± std over seeds "
            f"{results['seeds']}; cache {r['cache']['bytes'] / 2**20:.0f} MiB for {r['cache']['examples']} examples, "
            f"written in {r['cache']['seconds']:.0f} s)",
            "",
            f"| hidden-state knowledge | dev {r['metric']} |",
            "|---|---|",
        ]
        for point, row in r["rows"].items():
            lines.append(f"| {point} | {row['mean']:.4f} ± {row['std']:.4f} |")
        lines += ["", f"Smallest slice within one std of full HSK: **{smallest_matching_full(r['rows'])}**.", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    fig, axes = plt.subplots(len(tasks), 3, figsize=(12, 3.4 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        r = results["tasks"][task]
        for col, (axis, points) in enumerate(AXES.items()):
            ax = axes[row][col]
            shown = [(x, r["rows"][p]) for p, x in points if p in r["rows"]]
            ax.errorbar([x for x, _ in shown], [v["mean"] for _, v in shown], [v["std"] for _, v in shown], marker="o")
            if "joint 1l x 10t x 10%" in r["rows"]:
                joint = r["rows"]["joint 1l x 10t x 10%"]
                ax.axhline(joint["mean"], color="tab:orange", linestyle="--", label="1 layer x 10 tokens x 10 %")
            ax.set_title(f"{task}: {axis}")
            ax.set_xlabel(f"fraction of full HSK along {axis}")
            ax.set_ylabel(f"dev {r['metric']}")
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "cola"], choices=sorted(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    parser.add_argument("--keep", action="store_true", help="keep the other tasks' results already in the JSON")
    args = parser.parse_args()
    previous = RESULTS / "knowledge_amount.json"
    kept = json.loads(previous.read_text())["tasks"] if args.keep and previous.is_file() else {}
    results = {
        "benchmark": "knowledge_amount",
        "date": date.today().isoformat(),
        "machine": machine(),
        "seeds": args.seeds,
        "tasks": {task: r for task, r in kept.items() if task not in args.tasks},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        results["tasks"][task] = run_task(task, args.seeds, args.points)
        (RESULTS / "knowledge_amount.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "knowledge_amount.md").write_text(markdown(results))
        plot(results, RESULTS / "knowledge_amount.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
