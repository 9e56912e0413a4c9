"""Capacity gap on Fashion-MNIST: a CNN teacher distilled into ever smaller CNN / MLP students, four ways.

Teacher: configs/fashion/teacher.yaml, a CNN of width 64 (3 conv blocks: 64, 128, 256 channels; ~393k parameters),
trained once on the training subset and shared by every seed. Students (2 conv blocks for the CNNs):
    cnn16   ~20.5k parameters     cnn8   ~9.1k      cnn4   ~4.3k     mlp32   784 -> 32 -> 10, ~25k (no convolutions)
Methods, the same total epochs for all:
    alone       the student on gold labels only (method none)
    kd          soft-label KD, configs/fashion/kd-cnn.yaml / kd-mlp.yaml (T = 4, alpha = 0.9)
    annealing   Annealing-KD, configs/fashion/annealing-cnn.yaml (tau_max = 10): phase 1 over `epochs - 1` epochs,
                phase 2 one epoch on gold labels
    ta          teacher assistant (configs/fashion/ta-chain.yaml): teacher -> CNN width 16 -> student, soft-label KD
                on each hop; the cnn16 student's TA is a CNN of width 32. The width-16 assistant is the cnn16 "kd"
                run of the same seed, so it is not trained twice.
Every run reads the same fixed subset of the 60,000 training images (drawn with seed 0); dev = the 10,000 test
images. The table reports the dev accuracy of the best epoch, mean ± std over seeds.

    python bench/capacity_gap.py --threads 1              # everything: about half an hour on an idle 2-core machine
    python bench/capacity_gap.py --seeds 0 --threads 1 &   # or seeds in parallel processes
    python bench/capacity_gap.py --seeds 1 2 --threads 1 --reuse-runs
    python bench/capacity_gap.py --table-only                 # the table of every finished run

The teacher and the assistants are reused whenever their folder holds a finished run (the folder names carry the
settings); --reuse-runs also keeps finished student runs of an earlier invocation. Results are written after every
run to bench/results/capacity_gap.{json,md}. Needs Debian's dataset-fashion-mnist (or $KDLAB_FASHION_MNIST).
"""

from __future__ import annotations

import argparse
import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from common import cell, once, provenance, write_results

import kdlab
from kdlab.models.images import ImageModelConfig, image_parameter_count, load_image_model

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "fashion"
STUDENTS = {  # name -> (kind, width, width of its teacher assistant)
    "cnn16": ("cnn", 16, 32),
    "cnn8": ("cnn", 8, 16),
    "cnn4": ("cnn", 4, 16),
    "mlp32": ("mlp", 32, 16),
}
METHODS = {
    "alone": "student alone (gold)",
    "kd": "soft-label KD",
    "annealing": "Annealing-KD",
    "ta": "teacher assistant + KD",
}


def recipe_file(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / "fashion" / f"{name}.yaml").read_text(encoding="utf-8"))


def task(args: argparse.Namespace) -> dict:
    out = {"name": "fashion-mnist", "max_train_examples": args.train_examples}
    if args.dev_examples:
        out["max_dev_examples"] = args.dev_examples
    return out


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One process at a time trains a shared model (the teacher, an assistant); the others wait, then reuse it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def teacher(args: argparse.Namespace) -> Path:
    folder = WORK / f"teacher-n{args.train_examples}-e{args.teacher_epochs}"
    recipe = recipe_file("teacher")
    recipe["task"] = task(args)
    recipe["train"].update(epochs=args.teacher_epochs, progress_bar=False, checkpoint_every_steps=None)
    recipe["output"] = {"dir": str(folder), "overwrite": True}

    def train() -> dict:
        summary = kdlab.finetune(recipe)
        return {"best": summary.result.best_metric, "model_dir": str(summary.model_dir)}

    if args.table_only and not (folder / "bench_result.json").is_file():
        raise SystemExit(f"no finished teacher in {folder}: run the benchmark first")
    with locked(folder):
        result = once(folder, train)
    print(f"teacher: {result['best']:.4f} ({result['seconds']:.0f} s)", flush=True)
    return Path(result["model_dir"])


def student_recipe(args: argparse.Namespace, kind: str, width: int, seed: int, out: Path) -> dict:
    recipe = recipe_file("kd-cnn" if kind == "cnn" else "kd-mlp")
    recipe["task"] = task(args)
    recipe["teacher"] = {"model": str(args.teacher)}
    recipe["student"] = {"kind": kind, "width": width}
    recipe["train"].update(epochs=args.epochs, seed=seed, progress_bar=False, checkpoint_every_steps=None)
    recipe["output"] = {"dir": str(out), "overwrite": True}
    return recipe


def runs_dir(args: argparse.Namespace) -> Path:
    dev = f"-d{args.dev_examples}" if args.dev_examples else ""
    return WORK / f"n{args.train_examples}{dev}-e{args.epochs}"


def assistant(args: argparse.Namespace, width: int, seed: int) -> str:
    """The teacher assistant of this width and seed: teacher -> CNN of ``width`` by soft-label KD."""
    if width == STUDENTS["cnn16"][1]:
        return run(args, "cnn16", "kd", seed, shared=True)["model_dir"]
    out = runs_dir(args) / f"assistant-cnn{width}" / f"seed{seed}"
    recipe = student_recipe(args, "cnn", width, seed, out)
    with locked(out):
        result = once(out, lambda: distill(recipe))
    print(f"assistant cnn{width} seed {seed}: {result['best']:.4f} ({result['seconds']:.0f} s)", flush=True)
    return result["model_dir"]


def distill(recipe: dict) -> dict:
    summary = kdlab.distill(recipe)
    return {"best": summary.result.best_metric, "model_dir": str(summary.model_dir)}


def run(args: argparse.Namespace, student: str, method: str, seed: int, shared: bool = False) -> dict:
    kind, width, ta_width = STUDENTS[student]
    out = runs_dir(args) / student / method / f"seed{seed}"
    recipe = student_recipe(args, kind, width, seed, out)
    if method == "alone":
        recipe["distill"] = {"method": "none"}
    elif method == "annealing":
        annealing = recipe_file("annealing-cnn")["distill"]
        recipe["distill"] = {**annealing, "hard_epochs": 1}
        recipe["train"]["epochs"] = max(1, args.epochs - 1)
    elif method == "ta":
        recipe["teacher"]["model"] = assistant(args, ta_width, seed)
    with locked(out):
        done = out / "bench_result.json"
        if done.is_file() and not (args.reuse_runs or shared or out in args.finished):
            done.unlink()
        result = once(out, lambda: distill(recipe))
    args.finished.add(out)
    again = " reused" if result.get("reused") else ""
    print(f"{student:6s} {method:10s} seed {seed}: {result['best']:.4f} ({result['seconds']:.0f} s{again})", flush=True)
    return result


def collect(args: argparse.Namespace) -> dict:
    rows: dict = {}
    for student in STUDENTS:
        for method in METHODS:
            found = sorted((runs_dir(args) / student / method).glob("seed*/bench_result.json"))
            results = [json.loads(p.read_text()) for p in found]
            rows[f"{student}/{method}"] = {
                "seeds": [int(p.parent.name.removeprefix("seed")) for p in found],
                "best": [r["best"] for r in results],
                "seconds": [r["seconds"] for r in results],
            }
    for width in sorted({ta for _, _, ta in STUDENTS.values()} - {STUDENTS["cnn16"][1]}):
        found = sorted((runs_dir(args) / f"assistant-cnn{width}").glob("seed*/bench_result.json"))
        rows[f"assistant-cnn{width}"] = {"best": [json.loads(p.read_text())["best"] for p in found]}
    return rows


def parameters() -> dict[str, int]:
    shapes = {name: ImageModelConfig(kind, width, 10, (1, 28, 28)) for name, (kind, width, _) in STUDENTS.items()}
    shapes["cnn32"] = ImageModelConfig("cnn", 32, 10, (1, 28, 28))
    return {name: image_parameter_count(config) for name, config in shapes.items()}


def table(results: dict) -> str:
    params, rows = results["parameters"], results["rows"]
    assistants = ", ".join(
        f"cnn{w} ({params[f'cnn{w}']:,} parameters) {cell(rows[key]['best'])}"
        for w, key in ((16, "cnn16/kd"), (32, "assistant-cnn32"))
        if rows.get(key)
    )
    dev = f"{results['dev_examples']:,}" if results["dev_examples"] else "all 10,000"
    lines = [
        f"Fashion-MNIST dev accuracy ({dev} test images, best epoch), mean ± std over seeds; every run trains on "
        f"the same {results['train_examples']:,} training images for {results['epochs']} epochs. Teacher: CNN "
        f"width 64, 3 blocks, {results['teacher_parameters']:,} parameters, trained for {results['teacher_epochs']} "
        f"epochs: "
        f"{results['teacher_accuracy']:.4f}. Assistants (soft-label KD from the teacher): {assistants or '–'}.",
        "",
        "| student | parameters | " + " | ".join(METHODS.values()) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for student, (_, _, ta) in STUDENTS.items():
        cells = [cell(rows[f"{student}/{m}"]["best"]) for m in METHODS]
        cells[-1] += f" (TA cnn{ta})" if rows[f"{student}/ta"]["best"] else ""
        lines.append(f"| {student} | {params[student]:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(args: argparse.Namespace, teacher_info: dict) -> str:
    results = {
        **provenance("capacity_gap"),
        "train_examples": args.train_examples,
        "dev_examples": args.dev_examples,
        "epochs": args.epochs,
        "teacher_epochs": args.teacher_epochs,
        **teacher_info,
        "parameters": parameters(),
        "rows": collect(args),
    }
    text = table(results)
    if args.work is None:  # a smoke test elsewhere leaves the real results alone
        write_results("capacity_gap", results, text)
    return text


def main() -> None:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--train-examples", type=int, default=20000)
    parser.add_argument("--dev-examples", type=int, default=None, help="default: all 10,000 test images")
    parser.add_argument("--epochs", type=int, default=5, help="of every student run (annealing: epochs - 1 + 1)")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--reuse-runs", action="store_true", help="keep student runs an earlier invocation finished")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="where runs go (a smoke test points it elsewhere)")
    args = parser.parse_args()
    WORK = args.work or WORK
    args.finished = set()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.teacher = teacher(args)
    evaluation = kdlab.evaluate(student_recipe(args, "cnn", 4, 0, WORK / "unused"), model=str(args.teacher))
    teacher_info = {
        "teacher_accuracy": evaluation.metrics["accuracy"],
        "teacher_parameters": sum(p.numel() for p in load_image_model(args.teacher).parameters()),
    }
    if not args.table_only:
        for seed in args.seeds:
            for student in args.students:
                for method in args.methods:
                    run(args, student, method, seed)
                    report(args, teacher_info)
    print(report(args, teacher_info))


if __name__ == "__main__":
    main()
