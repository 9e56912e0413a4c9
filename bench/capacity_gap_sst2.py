"""Capacity-gap benchmark on SST-2: plain KD vs Annealing-KD vs a teacher assistant as the student shrinks.

Teacher: the fine-tuned MiniLM of bench/internal_kd.py (6 layers, hidden 384; bench/work/sst2/teacher/model).
Students, from a small to a large gap:
    L3        3 layers copied from the teacher (layers 2, 4, 6)
    L1        1 layer copied from the teacher (layer 6)
    L1-w128   1 layer, hidden 128, 2 heads, randomly initialised (a width change cannot copy weights)
Methods (same total epochs for all): student alone on gold labels; soft-label KD (T = 2, alpha = 0.5); Annealing-KD
(configs/sst2/annealing.yaml: tau_max = 7, phase 1 over `epochs - 1` epochs, phase 2 one epoch on gold labels);
teacher assistant (configs/sst2/ta-chain.yaml): teacher -> the L3 student of the soft-KD row (same seed) -> student,
soft-label KD on each hop; the first hop is that row's run itself, so it is not trained twice.
Every student reads the same fixed subset of SST-2's training split; dev = the whole GLUE dev split. The teacher's
logits are cached once (`kdlab cache`) and read by every run of the teacher; the assistant labels the set itself.

    python bench/capacity_gap_sst2.py --seeds 0 --threads 1 &    # seeds in parallel processes share the results
    python bench/capacity_gap_sst2.py --seeds 1 2 --threads 1
    python bench/capacity_gap_sst2.py --table-only                # the table of every finished run

Writes bench/results/capacity_gap_sst2.{json,md}; reads ../shared/data (or $KDLAB_DATA_ROOT).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import cell, once, provenance, train_subset_file, write_results

import kdlab

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "gap_sst2"
TEACHER = ROOT / "bench" / "work" / "sst2" / "teacher" / "model"
STUDENTS = {
    "L3": ({"kind": "shrink", "layers": [1, 3, 5]}, 1e-4),
    "L1": ({"kind": "shrink", "layers": [5]}, 1e-4),
    "L1-w128": (
        {"kind": "shrink", "layers": [5], "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
        5e-4,
    ),
}
METHODS = {
    "alone": "student alone (gold)",
    "kd": "soft-label KD",
    "annealing": "Annealing-KD",
    "ta": "teacher assistant (L3) + KD",
}


def base_recipe(args: argparse.Namespace, student: str, seed: int, out: Path) -> dict:
    config, lr = STUDENTS[student]
    return {
        "task": {"name": "sst2", "train": args.subset, "max_length": 64},
        "teacher": {"model": str(TEACHER), "label_once": True},
        "student": dict(config),
        "distill": {"method": "vanilla", "temperature": 2.0, "alpha": 0.5},
        "train": {
            "epochs": args.epochs,
            "batch_size": 32,
            "lr": lr,
            "seed": seed,
            "progress_bar": False,
            "checkpoint_every_steps": None,
        },
        "output": {"dir": str(out), "overwrite": True},
    }


def teacher_cache(args: argparse.Namespace) -> Path:
    folder = WORK / "cache"
    if not (folder / "manifest.json").is_file():
        recipe = base_recipe(args, "L1", 0, WORK / "unused")
        kdlab.cache({**recipe, "cache": {"dir": str(folder)}}, overwrite=True, progress=False)
    return folder


def run(args: argparse.Namespace, student: str, method: str, seed: int) -> dict:
    out = WORK / student / method / f"seed{seed}"
    recipe = base_recipe(args, student, seed, out)
    if method == "alone":
        recipe["distill"] = {"method": "none"}
    elif method == "annealing":
        recipe["distill"] = {"method": "annealing", "tau_max": 7, "hard_epochs": 1}
        recipe["train"]["epochs"] = args.epochs - 1
    if method in ("kd", "annealing"):
        recipe["cache"] = {"dir": str(teacher_cache(args))}
    if method == "ta":
        assistant = run(args, "L3", "kd", seed)["model_dir"]
        recipe["teacher"]["model"] = assistant
        recipe["student"]["layers"] = [2]  # the assistant's top layer, i.e. the teacher's layer 6 again

    def train() -> dict:
        summary = kdlab.distill(recipe)
        return {"best": summary.result.best_metric, "model_dir": str(summary.model_dir)}

    result = once(out, train)
    print(f"{student:8s} {method:10s} seed {seed}: {result['best']:.4f} ({result['seconds']:.0f} s)", flush=True)
    return result


def collect() -> dict:
    rows: dict = {}
    for student in STUDENTS:
        for method in METHODS:
            found = sorted((WORK / student / method).glob("seed*/bench_result.json"))
            results = [json.loads(p.read_text()) for p in found]
            rows[f"{student}/{method}"] = {
                "seeds": [int(p.parent.name.removeprefix("seed")) for p in found],
                "best": [r["best"] for r in results],
                "seconds": [r["seconds"] for r in results],
            }
    return rows


def parameters(student: str) -> int | None:
    run_dir = next((WORK / student / "alone").glob("seed*/student"), None)
    if run_dir is None:
        return None
    from transformers import AutoModelForSequenceClassification

    return sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(run_dir).parameters())


def table(results: dict) -> str:
    teacher = results["teacher_accuracy"]
    lines = [
        f"SST-2 dev accuracy (best epoch), mean ± std over seeds; students see {results['train_examples']} training "
        f"examples for {results['epochs']} epochs; teacher (MiniLM, 6 layers, 22.7M parameters): {teacher:.4f}.",
        "",
        "| student | parameters | " + " | ".join(METHODS.values()) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for student in STUDENTS:
        count = results["parameters"].get(student)
        cells = [cell(results["rows"][f"{student}/{m}"]["best"]) for m in METHODS]
        size = f"{count / 1e6:.1f}M" if count else "–"
        lines.append(f"| {student} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--train-examples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="where runs go (a smoke test points it elsewhere)")
    args = parser.parse_args()
    WORK = args.work or WORK
    if args.threads:
        torch.set_num_threads(args.threads)
    args.subset = train_subset_file("sst2", args.train_examples, WORK / "data")
    if not args.table_only:
        for seed in args.seeds:
            for student in args.students:
                for method in args.methods:
                    if not (method == "ta" and student == "L3"):  # L3 is the assistant itself
                        run(args, student, method, seed)
    teacher = kdlab.evaluate(base_recipe(args, "L1", 0, WORK / "unused"), model=str(TEACHER))
    results = {
        **provenance("capacity_gap_sst2"),
        "train_examples": args.train_examples,
        "epochs": args.epochs,
        "teacher_accuracy": teacher.metrics["accuracy"],
        "parameters": {s: parameters(s) for s in STUDENTS},
        "rows": collect(),
    }
    if args.work is None:
        write_results("capacity_gap_sst2", results, table(results))
    print(table(results))


if __name__ == "__main__":
    main()
