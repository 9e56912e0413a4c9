"""Training from a teacher cache vs with the live teacher, against a student-only step measured in the same run.

SST-2 (4,000 training examples, max length 64, batch 32), 2-layer student, one epoch per measurement:
  student only   method none: no teacher at all (the floor any KD step can reach)
  live teacher   the teacher runs every step (inference mode, cut after its deepest needed layer)
  from cache     `kdlab cache` ran the teacher once before; the teacher is never loaded while training
Two kinds of knowledge: soft-label KD (logits), and logits + the paper's tiny hidden-state slice (1 layer x 10 tokens
ranked by the teacher's [CLS] attention x 10 % of the width; the live teacher then needs eager attention).
Teachers: the fine-tuned MiniLM (6 layers), and a 12-layer teacher of MiniLM's width built from its config (random
weights: a timing row only). Each repeat runs every variant once, in a rotated order; mean ± std over repeats.

The bound on the speedup over a live teacher is (teacher forward + student step) / student step, i.e. the live step
time over the student-only step time, both measured here.

    python bench/cache_speed.py --repeats 3     # about 15 minutes on 2 CPU cores; run nothing else meanwhile

Writes bench/results/cache_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from common import machine, summarise

import kdlab

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work" / "speed"
MINILM_TEACHER = ROOT / "bench" / "work" / "sst2" / "teacher" / "model"
TRAIN_EXAMPLES = 4000


def deep_teacher(layers: int = 12) -> Path:
    """MiniLM's configuration with more layers, random weights (timing only), saved with the full tokenizer."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    out = WORK / f"teacher{layers}"
    if not (out / "model.safetensors").is_file():
        config = AutoConfig.from_pretrained(MINILM_TEACHER)
        config.num_hidden_layers = layers
        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
        AutoTokenizer.from_pretrained(MINILM_TEACHER).save_pretrained(out)
    return out


def hsk_match(teacher_layers: int) -> dict:
    # Student top layer <- the teacher layer two thirds up (the paper: a non-top teacher layer works best).
    return {
        "teacher": f"bert.encoder.layer.{(2 * teacher_layers) // 3 - 1}",
        "student": "bert.encoder.layer.1",
        "loss": "mse",
        "tokens": "attention_no_sep:10",
        "width": 0.1,
        "width_mask": "importance",
    }


def recipe(teacher: Path, layers: int, knowledge: str, mode: str, name: str) -> dict:
    distill: dict = {"method": "vanilla", "temperature": 2.0, "alpha": 0.5}
    if knowledge == "logits + HSK":
        distill.update(method="internal", matches=[hsk_match(layers)])
    if mode == "student only":
        distill = {"method": "none"}
    spec = {
        "task": {"name": "sst2", "max_length": 64, "max_train_examples": TRAIN_EXAMPLES, "max_dev_examples": 200},
        "teacher": {"model": str(teacher)},
        "student": {"kind": "shrink", "layers": "uniform:2"},
        "distill": distill,
        "train": {
            "epochs": 1,
            "batch_size": 32,
            "lr": 1e-4,
            "progress_bar": False,
            "checkpoint_every_steps": None,
            "log_every_steps": 10,
        },
        "output": {"dir": str(WORK / name / "run"), "overwrite": True},
    }
    if mode == "from cache":
        spec["cache"] = {"dir": str(WORK / name / "cache")}
    return spec


def step_seconds(run_dir: Path) -> float:
    """Mean seconds per optimizer step from the trainer's own throughput log (first window = warm-up, dropped)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if r.get("split") == "train"][1:]
    return 32 / statistics.mean(rates)


def measure(spec: dict) -> dict:
    start = time.perf_counter()
    kdlab.distill(spec)
    return {"epoch_s": time.perf_counter() - start, "step_s": step_seconds(Path(spec["output"]["dir"]))}


def run(repeats: int) -> dict:
    teachers = {
        "MiniLM, 6 layers (fine-tuned)": (MINILM_TEACHER, 6),
        "12 layers, MiniLM width (random)": (deep_teacher(12), 12),
    }
    variants = []
    cache_seconds = {}
    for t_name, (path, layers) in teachers.items():
        variants.append((t_name, "-", "student only", recipe(path, layers, "-", "student only", f"{layers}-alone")))
        for knowledge in ("logits", "logits + HSK"):
            name = f"{layers}-{knowledge.replace(' + ', '-')}"
            for mode in ("live teacher", "from cache"):
                variants.append((t_name, knowledge, mode, recipe(path, layers, knowledge, mode, name)))
            start = time.perf_counter()
            kdlab.cache(recipe(path, layers, knowledge, "from cache", name), overwrite=True, progress=False)
            cache_seconds[f"{t_name} / {knowledge}"] = time.perf_counter() - start
    times: dict[tuple, list[dict]] = {}
    for repeat in range(repeats):
        shift = repeat % len(variants)
        for t_name, knowledge, mode, spec in variants[shift:] + variants[:shift]:
            result = measure(spec)
            times.setdefault((t_name, knowledge, mode), []).append(result)
            print(f"[{repeat}] {t_name} | {knowledge} | {mode}: {result['epoch_s']:.1f} s, step {result['step_s']:.3f}")
    rows = []
    for t_name in teachers:
        alone = times[(t_name, "-", "student only")]
        for knowledge in ("logits", "logits + HSK"):
            live, cached = times[(t_name, knowledge, "live teacher")], times[(t_name, knowledge, "from cache")]
            rows.append(
                {
                    "teacher": t_name,
                    "knowledge": knowledge,
                    "cache_write_s": cache_seconds[f"{t_name} / {knowledge}"],
                    "student_only_epoch_s": summarise([r["epoch_s"] for r in alone]),
                    "live_epoch_s": summarise([r["epoch_s"] for r in live]),
                    "cached_epoch_s": summarise([r["epoch_s"] for r in cached]),
                    "speedup": summarise([a["epoch_s"] / b["epoch_s"] for a, b in zip(live, cached, strict=True)]),
                    "bound": summarise([a["step_s"] / b["step_s"] for a, b in zip(live, alone, strict=True)]),
                    "cached_over_student_step": summarise(
                        [a["step_s"] / b["step_s"] for a, b in zip(cached, alone, strict=True)]
                    ),
                }
            )
    return {"rows": rows}


def markdown(results: dict) -> str:
    lines = [
        f"SST-2, {TRAIN_EXAMPLES} training examples, batch 32, 2-layer student; one epoch; mean ± std over "
        f"{results['repeats']} repeats. {results['machine']}, {results['date']}.",
        "",
        "| teacher | knowledge | epoch: student only (s) | epoch: live teacher (s) | epoch: from cache (s) "
        "| speedup over live | bound (live step / student step) | cached step / student step | cache written in (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(d: dict, digits: int = 1) -> str:
        return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"

    for r in results["rows"]:
        lines.append(
            f"| {r['teacher']} | {r['knowledge']} | {ms(r['student_only_epoch_s'])} | {ms(r['live_epoch_s'])} "
            f"| {ms(r['cached_epoch_s'])} | {ms(r['speedup'], 2)}× | {ms(r['bound'], 2)}× "
            f"| {ms(r['cached_over_student_step'], 3)}× | {r['cache_write_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {
        "benchmark": "cache_speed",
        "date": date.today().isoformat(),
        "machine": machine(),
        "repeats": args.repeats,
        **run(args.repeats),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cache_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "cache_speed.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
