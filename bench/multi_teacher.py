"""Multi-teacher KD on SST-2 with teachers of different quality: equal vs confidence vs learned weights.

Teachers (all label the student's training set once):
    strong   the fine-tuned MiniLM of bench/internal_kd.py (6 layers; bench/work/sst2/teacher/model)
    weak     1 MiniLM layer fine-tuned on 500 gold examples only
    noisy    2 MiniLM layers fine-tuned on the student's training subset with 40% of its labels flipped
Student: 1 layer copied from the strong teacher (layer 6), the same subset and settings as the L1 row of
bench/capacity_gap_sst2.py (T = 2, alpha = 0.5). Rows: soft-label KD from the strong teacher alone, and from all three
with equal weights, confidence weights (each teacher's probability of the gold class) and learned selection
(Yuan et al. 2021: a Bernoulli policy per example and teacher, REINFORCE, one warm-up epoch of equal weights), with
the policy's default learning rate and with a ten times smaller one.
For the learned policy the table shows how often it selected each teacher after warm-up, overall and on the
training examples that teacher gets wrong (its top class is not the gold label).

    python bench/multi_teacher.py --seeds 0 --threads 1 &      # seeds in parallel processes share the results
    python bench/multi_teacher.py --seeds 1 2 --threads 1

Writes bench/results/multi_teacher.{json,md}; reads ../shared/data (or $KDLAB_DATA_ROOT).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from common import cell, once, provenance, train_subset_file, write_results

import kdlab

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "multi_teacher"
STRONG = ROOT / "bench" / "work" / "sst2" / "teacher" / "model"
ROWS = {
    "strong": "KD from the strong teacher only",
    "equal": "3 teachers, equal weights",
    "confidence": "3 teachers, confidence weights",
    "learned-lr1e-3": "3 teachers, learned selection, policy lr 1e-3",
    "learned": "3 teachers, learned selection, policy lr 1e-2 (default)",
}
POLICY_LR = {"learned-lr1e-3": 1e-3}  # the other learned row keeps PolicyConfig's default
TEACHERS = ("strong", "weak", "noisy")


def recipe(train: str, seed: int, out: Path, epochs: int) -> dict:
    return {
        "task": {"name": "sst2", "train": train, "max_length": 64},
        "teacher": {"model": str(STRONG), "label_once": True},
        "student": {"kind": "shrink", "layers": [5]},
        "distill": {"method": "vanilla", "temperature": 2.0, "alpha": 0.5},
        "train": {
            "epochs": epochs,
            "batch_size": 32,
            "lr": 1e-4,
            "seed": seed,
            "progress_bar": False,
            "checkpoint_every_steps": None,
        },
        "output": {"dir": str(out), "overwrite": True},
    }


def flipped_copy(source: str, share: float, target: Path) -> str:
    """The subset with ``share`` of its labels flipped (a fixed draw), for the noisy teacher."""
    if not target.is_file():
        lines = Path(source).read_text(encoding="utf-8").splitlines()
        rng = random.Random(0)
        rows = [lines[0]]
        for line in lines[1:]:
            text, label = line.rsplit("\t", 1)
            rows.append(f"{text}\t{1 - int(label) if rng.random() < share else label}")
        target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(target)


def teachers(args: argparse.Namespace) -> dict[str, str]:
    """Train the weak and noisy teachers once (gold-only runs from MiniLM); every seed shares them."""
    built = {"strong": str(STRONG)}
    specs = {
        "weak": ([5], train_subset_file("sst2", 500, WORK / "data"), 2),
        "noisy": ([2, 5], flipped_copy(args.subset, 0.4, WORK / "data" / "noisy-train.tsv"), 2),
    }
    for name, (layers, train, epochs) in specs.items():
        spec = recipe(train, 0, WORK / "teachers" / name, epochs)
        spec["teacher"] = {"model": "minilm"}
        spec["student"]["layers"] = layers
        spec["distill"] = {"method": "none"}
        built[name] = once(WORK / "teachers" / name, lambda s=spec: {"model": str(kdlab.distill(s).model_dir)})["model"]
    return built


def run(args: argparse.Namespace, row: str, seed: int, teacher_dirs: dict[str, str]) -> dict:
    out = WORK / row / f"seed{seed}"
    spec = recipe(args.subset, seed, out, args.epochs)
    if row != "strong":
        spec["distill"]["teachers"] = [teacher_dirs["weak"], teacher_dirs["noisy"]]
        spec["distill"]["teacher_weights"] = row.split("-")[0]
        spec["distill"]["policy"] = {"warmup_epochs": 1}
        if row in POLICY_LR:
            spec["distill"]["policy"]["lr"] = POLICY_LR[row]

    def train() -> dict:
        summary = kdlab.distill(spec)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        train_records = [r for r in records if r["split"] == "train"]
        rates = {
            name: sum(r[f"select_t{k}"] for r in train_records if f"select_t{k}" in r)
            / max(1, sum(f"select_t{k}" in r for r in train_records))
            for k, name in enumerate(TEACHERS)
        }
        wrong_rates = {
            name: sum(r.get(f"select_wrong_t{k}", 0.0) for r in train_records)
            / max(1e-12, sum(r.get(f"wrong_t{k}", 0.0) for r in train_records))
            for k, name in enumerate(TEACHERS)
        }
        weights = {
            name: sum(r.get(f"weight_t{k}", 0.0) for r in train_records) / max(1, len(train_records))
            for k, name in enumerate(TEACHERS)
        }
        return {
            "best": summary.result.best_metric,
            "selection": rates,
            "selection_where_wrong": wrong_rates,
            "mean_weight": weights,
        }

    result = once(out, train)
    print(f"{row:10s} seed {seed}: {result['best']:.4f} ({result['seconds']:.0f} s)", flush=True)
    return result


def collect() -> dict:
    rows = {}
    for row in ROWS:
        results = [json.loads(p.read_text()) for p in sorted((WORK / row).glob("seed*/bench_result.json"))]
        rows[row] = {
            "best": [r["best"] for r in results],
            "selection": {t: [r["selection"][t] for r in results] for t in TEACHERS},
            "selection_where_wrong": {
                t: [r.get("selection_where_wrong", {}).get(t, 0.0) for r in results] for t in TEACHERS
            },
            "mean_weight": {t: [r["mean_weight"][t] for r in results] for t in TEACHERS},
            "seconds": [r["seconds"] for r in results],
        }
    return rows


def table(results: dict) -> str:
    acc = results["teacher_accuracy"]
    lines = [
        f"SST-2 dev accuracy (best epoch), mean ± std over seeds; student: 1 layer, {results['train_examples']} "
        f"training examples, {results['epochs']} epochs. Teachers' dev accuracy: strong {acc['strong']:.4f}, weak "
        f"{acc['weak']:.4f}, noisy {acc['noisy']:.4f}.",
        "",
        "| teachers and weights | dev accuracy | mean weight strong / weak / noisy | "
        "selection rate strong / weak / noisy (after warm-up) | ... on the examples that teacher gets wrong |",
        "|---|---|---|---|---|",
    ]
    for row, label in ROWS.items():
        r = results["rows"][row]
        learned = row.startswith("learned")
        weights = per_teacher(r["mean_weight"]) if row != "strong" else "1"
        selection = per_teacher(r["selection"]) if learned else ""
        wrong = per_teacher(r["selection_where_wrong"]) if learned else ""
        lines.append(f"| {label} | {cell(r['best'])} | {weights} | {selection} | {wrong} |")
    return "\n".join(lines)


def per_teacher(values: dict[str, list[float]]) -> str:
    """``mean ± std`` of every teacher, strong / weak / noisy."""
    return " / ".join(cell(values[t], 2).split(" (")[0] for t in TEACHERS)


def main() -> None:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--train-examples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="where runs go (a smoke test points it elsewhere)")
    args = parser.parse_args()
    WORK = args.work or WORK
    if args.threads:
        torch.set_num_threads(args.threads)
    # the same fixed subset as bench/capacity_gap_sst2.py
    args.subset = train_subset_file("sst2", args.train_examples, ROOT / "bench" / "work" / "gap_sst2" / "data")
    teacher_dirs = teachers(args)
    if not args.table_only:
        for seed in args.seeds:
            for row in args.rows:
                run(args, row, seed, teacher_dirs)
    accuracy = {
        name: kdlab.evaluate(recipe(args.subset, 0, WORK / "unused", 1), model=path).metrics["accuracy"]
        for name, path in teacher_dirs.items()
    }
    results = {
        **provenance("multi_teacher"),
        "train_examples": args.train_examples,
        "epochs": args.epochs,
        "teacher_accuracy": accuracy,
        "rows": collect(),
    }
    if args.work is None:
        write_results("multi_teacher", results, table(results))
    print(table(results))


if __name__ == "__main__":
    main()
