"""Cross-architecture KD with teacher-labelled augmentation (Gajbhiye et al. 2021; Tang et al. 2019).

QE (MLQE-PE, per language pair): MiniLM cross-encoder regressor (teacher, `kdlab finetune`) -> the BiRNN QE student
(own source/target word vocabularies, BiGRU 50 + attention per side, embeddings 50). SST-2: the fine-tuned MiniLM
classifier -> a BiLSTM (300) on its own word vocabulary, on a fixed training subset. Rows per task:
  teacher                 the fine-tuned MiniLM
  student gold-only       gold labels only (no teacher)
  student KD              the teacher's outputs on the training data (QE: MSE(s, t) alone, the paper's setting)
  student KD + aug        plus inputs labelled only by the teacher: QE: perturbed translations + pairs of two
                          other X->En training sets; SST-2: 20k unlabelled SST-2 training phrases outside the
                          6k-example labelled subset + 2 perturbed copies per sentence (Tang et al.); filtered so their
                          teacher scores are distributed like the teacher's scores on the original data
The teacher labels everything once through `kdlab cache` (one cache per task serves both KD rows and every seed);
students then train without loading it. Dev metrics are those of the best epoch (the saved student) and of the
last epoch (no selection on dev). Latency: CPU forward of one batch of 32 dev examples (and of one example),
median of 10, same inputs for teacher and student.

    python bench/cross_arch.py --threads 1 --tasks ro-en si-en &   # training runs: two processes in parallel,
    python bench/cross_arch.py --threads 1 --tasks et-en sst2      # one thread each (accuracy is unaffected)
    python bench/cross_arch.py --sizes-only                         # then, alone: parameters and CPU latency

Writes bench/results/cross_arch/<task>.json and the table bench/results/cross_arch.md; teachers are fine-tuned into
bench/work/ when missing; reads ../shared/data (or $KDLAB_DATA_ROOT).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import yaml
from common import machine, summarise, train_subset_file

import kdlab
from kdlab.commands.build import load_data, task_spec
from kdlab.commands.teacher_side import open_teacher
from kdlab.commands.training_set import augmentation_candidates, load_splits
from kdlab.methods import FeatureMatcher, Objective
from kdlab.models import load_classifier
from kdlab.profiling import latency_ms, parameter_count

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work"
X_EN = ["ro-en", "et-en", "si-en", "ne-en", "ru-en"]
ROWS = ["student gold-only", "student KD", "student KD + aug"]
# Which part of the QE augmentation helps (--ablations): every candidate unfiltered (capped at 21k), or one source.
ABLATIONS = ["KD + aug, no filter (21k)", "KD + perturbed translations only", "KD + other-pair pools only"]
SST2_TRAIN = 6000
SST2_POOL = 20000
MAIN = {False: "pearson", True: "accuracy"}


def load_yaml(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))


def qe_teacher(pair: str) -> Path:
    out = WORK / "qe" / pair / "teacher"
    if not (out / "model" / "config.json").is_file():
        overrides = [f"task.name=mlqe-{pair}", f"output.dir={out}", "output.overwrite=true", "train.progress_bar=false"]
        kdlab.finetune(ROOT / "configs/qe/teacher-ro-en.yaml", overrides)
    return out / "model"


def sst2_teacher() -> Path:
    path = WORK / "sst2" / "teacher" / "model"
    if not (path / "config.json").is_file():
        raise SystemExit(f"no SST-2 teacher in {path}: run `python bench/internal_kd.py --tasks sst2` first")
    return path


def qe_recipe(pair: str, row: str, epochs: int) -> dict:
    name = {"student gold-only": "gold", "student KD": "kd"}.get(row, "kd-aug")
    spec = load_yaml(f"configs/qe/birnn-{name}-ro-en.yaml")
    spec["task"]["name"] = f"mlqe-{pair}"
    spec["teacher"]["model"] = str(qe_teacher(pair))
    spec["train"]["epochs"] = epochs
    if "augment" in spec:
        augment = spec["augment"]
        augment["pools"] = [{"task": f"mlqe-{other}"} for other in X_EN if other != pair][:2]
        if row == ABLATIONS[0]:
            augment.update(filter="none", max_examples=21000)
        elif row == ABLATIONS[1]:
            augment["pools"] = []
        elif row == ABLATIONS[2]:
            augment["perturb"]["copies"] = 0
    return spec


def sst2_recipe(row: str, epochs: int) -> dict:
    spec = load_yaml("configs/sst2/bilstm-own.yaml")
    spec["task"] = {
        "name": "sst2",
        "train": train_subset_file("sst2", SST2_TRAIN, WORK / "data"),
        "max_length": 64,
    }
    spec["teacher"]["model"] = str(sst2_teacher())
    spec["train"]["epochs"] = epochs
    spec["distill"]["alpha"] = 0.5
    # Unlabelled in-domain text: the rest of SST-2's training split (its labels unused), plus perturbed copies.
    spec["augment"]["pools"] = [{"task": "sst2", "split": "train", "max_examples": SST2_POOL}]
    spec["augment"]["perturb"]["copies"] = 2
    spec["augment"]["filter"] = "match_teacher"
    if row == "student gold-only":
        spec["distill"] = {"method": "none"}
    if row != "student KD + aug":
        del spec["augment"]
    return spec


def run_row(task: str, base: dict, row: str, seed: int, cache_dir: Path) -> dict:
    spec = json.loads(json.dumps(base))
    spec["train"].update(seed=seed, progress_bar=False, checkpoint_every_steps=None)
    spec["output"] = {"dir": str(WORK / "cross_arch" / task / row.replace(" ", "_") / f"seed{seed}"), "overwrite": True}
    if spec["distill"]["method"] != "none":
        spec["cache"] = {"dir": str(cache_dir)}
    start = time.perf_counter()
    run = kdlab.distill(spec)
    evals = [json.loads(line) for line in (Path(spec["output"]["dir"]) / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e.get("split") == "dev"]
    main = MAIN[task == "sst2"]
    return {
        "best": run.result.best_metric,
        "last": evals[-1][main],
        "augmented": run.extra.get("augmented_examples", 0),
        "train_examples": run.extra.get("train_examples"),
        "seconds": time.perf_counter() - start,
        "model_dir": str(run.model_dir),
    }


def size_and_speed(model_dir: str, base: dict) -> dict:
    """Parameters and CPU latency on the same first dev examples, for a batch of 32 and for one example."""
    r = kdlab.recipe(base)
    spec = task_spec(r.task)
    model, tokenizer = load_classifier(model_dir, spec.num_labels, regression=spec.regression)
    data = load_data(spec, r.task, tokenizer, 0, need_train=False)
    assert data.dev is not None
    timing = {}
    for size in (32, 1):
        batch = data.collate(data.dev[:size])
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        timing[f"ms_batch{size}"] = latency_ms(model, inputs, warmup=3, repeats=10)[0]
    return {"parameters": parameter_count(model), **timing}


def bench_task(task: str, seeds: list[int], epochs: int, rows: list[str]) -> dict:
    make = (lambda row: sst2_recipe(row, epochs)) if task == "sst2" else (lambda row: qe_recipe(task, row, epochs))
    with_aug = make("student KD + aug")
    cache_dir = WORK / "cross_arch" / task / "cache"
    out: dict = {"epochs": epochs, "seeds": seeds, "rows": {}}
    if not (cache_dir / "manifest.json").is_file():
        start = time.perf_counter()
        summary = kdlab.cache({**with_aug, "cache": {"dir": str(cache_dir)}}, overwrite=True, progress=False)
        out["cache"] = {"examples": summary.examples, "seconds": time.perf_counter() - start}
    teacher_eval = kdlab.evaluate(with_aug, model=with_aug["teacher"]["model"])
    out["teacher"] = {"metric": teacher_eval.metrics[MAIN[task == "sst2"]], "metrics": teacher_eval.metrics}
    for row in rows:
        runs = [run_row(task, make(row), row, seed, cache_dir) for seed in seeds]
        out["rows"][row] = {
            "best": summarise([r["best"] for r in runs]),
            "last": summarise([r["last"] for r in runs]),
            "augmented": runs[0]["augmented"],
            "seconds_per_run": summarise([r["seconds"] for r in runs]),
            "runs": runs,
        }
        print(f"{task} {row}: {out['rows'][row]['best']['mean']:.4f} ± {out['rows'][row]['best']['std']:.4f}")
    return out


def candidate_scores(task: str, epochs: int) -> dict:
    """How the augmentation candidates' teacher scores compare with the training data's (read from the cache)."""
    spec = qe_recipe(task, "student KD + aug", epochs) if task != "sst2" else sst2_recipe("student KD + aug", epochs)
    spec["cache"] = {"dir": str(WORK / "cross_arch" / task / "cache")}
    r = kdlab.recipe(spec)
    task_def = task_spec(r.task)
    side = open_teacher(r, task_def, FeatureMatcher([]), Objective(r.distill, task_def.regression))
    splits = augmentation_candidates(r, task_def, load_splits(task_def, r.task, 0), side.mask_token)
    train, candidates = side.scores(splits.train), side.scores(splits.augmented)
    low, high = np.quantile(train, [0.1, 0.9])
    return {
        "train_mean": float(train.mean()),
        "candidates_mean": float(candidates.mean()),
        "candidates": len(candidates),
        "share_below_train_p10": float((candidates < low).mean()),
        "share_above_train_p90": float((candidates > high).mean()),
    }


def measure_sizes(task: str, res: dict, epochs: int) -> None:
    """Parameters and latency of the teacher and of the first KD student (run alone: timings need idle cores)."""
    base = sst2_recipe("student KD", epochs) if task == "sst2" else qe_recipe(task, "student KD", epochs)
    res["teacher"].update(size_and_speed(base["teacher"]["model"], base))
    res["student"] = size_and_speed(res["rows"]["student KD"]["runs"][0]["model_dir"], base)


def _sizes(t: dict, s: dict | None) -> str:
    """Parameter count, teacher/student parameter ratio, latencies (with ratios) of the student vs the teacher."""
    if s is None or "parameters" not in t:
        return "| | |"
    return (
        f"{s['parameters'] / 1e6:.2f} M | {t['parameters'] / s['parameters']:.1f}x | "
        f"{s['ms_batch32']:.1f} ({t['ms_batch32'] / s['ms_batch32']:.0f}x) | "
        f"{s['ms_batch1']:.2f} ({t['ms_batch1'] / s['ms_batch1']:.0f}x)"
    )


def table(results: dict) -> str:
    lines = [
        "| task | row | dev (best epoch) | dev (last epoch) | augmented inputs | parameters | teacher/student "
        "params | CPU ms, batch 32 (speed-up) | CPU ms, batch 1 (speed-up) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, res in results.items():
        t = res["teacher"]
        metric = "accuracy" if task == "sst2" else "Pearson r"
        sizes = "| | |" if "parameters" not in t else f"{t['parameters'] / 1e6:.1f} M | 1 | {t['ms_batch32']:.1f} | "
        if "parameters" in t:
            sizes += f"{t['ms_batch1']:.2f}"
        lines.append(f"| {task} ({metric}) | teacher (MiniLM) | {t['metric']:.4f} | | | {sizes} |")
        for row, values in res["rows"].items():
            best, last = values["best"], values["last"]
            size = _sizes(t, res.get("student")) if row == "student KD" else "| | |"
            lines.append(
                f"| | {row} | {best['mean']:.4f} ± {best['std']:.4f} | {last['mean']:.4f} ± {last['std']:.4f} | "
                f"{values['augmented'] or ''} | {size} |"
            )
    return "\n".join(lines)


def result_file(task: str) -> Path:
    return RESULTS / "cross_arch" / f"{task}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["ro-en", "et-en", "si-en", "sst2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--qe-epochs", type=int, default=8)
    parser.add_argument("--sst2-epochs", type=int, default=3)
    parser.add_argument("--ablations", action="store_true", help="QE: run only the augmentation ablation rows")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (training runs only)")
    parser.add_argument(
        "--sizes-only",
        action="store_true",
        help="only measure parameters and latency of finished tasks (run alone), and the QE candidates' teacher scores",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for task in args.tasks:
        epochs = args.sst2_epochs if task == "sst2" else args.qe_epochs
        path = result_file(task)
        if args.sizes_only:
            res = json.loads(path.read_text())
            measure_sizes(task, res, epochs)
            if task != "sst2":
                res["candidate_scores"] = candidate_scores(task, epochs)
        else:
            if args.threads:
                torch.set_num_threads(args.threads)
            if args.ablations:
                res = json.loads(path.read_text())
                res["rows"].update(bench_task(task, args.seeds, epochs, ABLATIONS)["rows"])
                res["ablation_command"] = " ".join(["python bench/cross_arch.py", *sys.argv[1:]])
            else:
                res = bench_task(task, args.seeds, epochs, ROWS)
                res["command"] = " ".join(["python bench/cross_arch.py", *sys.argv[1:]])
        res.update(date=str(date.today()), machine=machine())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2))
    results = {p.stem: json.loads(p.read_text()) for p in sorted((RESULTS / "cross_arch").glob("*.json"))}
    (RESULTS / "cross_arch.md").write_text(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
