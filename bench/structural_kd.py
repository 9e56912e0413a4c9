"""Structural KD on UD English-EWT (Wang et al. 2021): UPOS tagging and dependency parsing, dev scores.

Teachers are MiniLM fine-tuned with `configs/ud/teacher-*.yaml` (trained here if missing: CRF and softmax UPOS
taggers, a CRF XPOS tagger, a biaffine parser; in the low-resource setting a CRF tagger and a parser trained on the
10 % gold share). Each teacher labels the training sentences once into a word cache (`kdlab cache`), and every
student row trains a BiLSTM on its own vocabulary from `configs/ud/<row recipe>.yaml` with that cache:

  no KD                       gold labels only (method none)
  token                       token-level KD on the teacher's emissions (softmax(e_t/T) per word)
  Top-K                       the teacher's K best sequences weighted by their scores (Kim & Rush)
  structural                  Wang et al.: case 1 CRF->CRF, 2 CRF->softmax, 3 softmax->CRF, 4 XPOS->UPOS (mapped);
                              parsing: tree arc marginals (Matrix-Tree) -> head-selection student

Groups: `tagging`, `parsing` (all gold labels) and `tagging-gold10` (the student sees gold labels for 10 % of the
training sentences; the teacher, itself trained on that 10 %, labels all of them); `parsing-gold10` is the same
for parsing (not in the default run: about an hour more on 2 CPU cores).
Every row runs for each seed; the table reports the dev score of the best epoch, mean ± std over seeds. The
low-resource "no KD" row trains on the gold share only, for 1/gold_fraction times the epochs (the same number of
optimizer steps as the KD rows, which read every training sentence).

    python bench/structural_kd.py --groups tagging --threads 1      # and the other groups, in parallel processes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
import yaml
from common import machine, summarise

import kdlab

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "ud"
RESULTS = ROOT / "bench" / "results"
GOLD10 = 0.1

TEACHERS = {  # name -> (recipe, overrides)
    "upos-crf": ("configs/ud/teacher-upos-crf.yaml", []),
    "upos-softmax": ("configs/ud/teacher-upos-softmax.yaml", []),
    "xpos-crf": ("configs/ud/teacher-xpos-crf.yaml", []),
    "deps": ("configs/ud/teacher-deps.yaml", []),
    "upos-crf-gold10": ("configs/ud/teacher-upos-crf.yaml", [f"task.gold_fraction={GOLD10}", "train.epochs=6"]),
    "deps-gold10": ("configs/ud/teacher-deps.yaml", [f"task.gold_fraction={GOLD10}", "train.epochs=6"]),
}

CASES = [  # (case, student recipe, teacher)
    ("1 CRF → CRF", "upos-crf-from-crf", "upos-crf"),
    ("2 CRF → softmax", "upos-softmax-from-crf", "upos-crf"),
    ("3 softmax → CRF", "upos-crf-from-softmax", "upos-softmax"),
    ("4 XPOS-CRF → UPOS-CRF", "upos-crf-from-xpos", "xpos-crf"),
]
METHODS = ("token", "topk", "structural")


def rows(group: str) -> list[tuple[str, str, str | None, str]]:
    """(row name, student recipe, teacher, method) of a group."""
    if group == "tagging":
        out = [("no KD, BiLSTM-softmax", "upos-softmax-from-crf", None, "none")]
        out.append(("no KD, BiLSTM-CRF", "upos-crf-from-crf", None, "none"))
        out += [(f"case {case}: {m}", recipe, teacher, m) for case, recipe, teacher in CASES for m in METHODS]
        return out
    if group == "tagging-gold10":
        out = [("no KD, BiLSTM-CRF", "upos-crf-from-crf", None, "none")]
        return out + [(f"case 1 CRF → CRF: {m}", "upos-crf-from-crf", "upos-crf-gold10", m) for m in METHODS]
    teacher = "deps" if group == "parsing" else "deps-gold10"
    return [
        (f"{m if m != 'none' else 'no KD'}", "deps-from-biaffine", teacher if m != "none" else None, m)
        for m in ("none", "token", "structural")
    ]


def teacher_model(name: str) -> Path:
    out = WORK / f"teacher-{name}"
    if not (out / "model" / "config.json").is_file():
        recipe, overrides = TEACHERS[name]
        extra = [f"output.dir={out}", "output.overwrite=true", "train.progress_bar=false"]
        kdlab.finetune(ROOT / recipe, overrides + extra)
    return out / "model"


def student_spec(recipe: str, teacher: str | None, method: str, gold: float | None, args: argparse.Namespace) -> dict:
    spec = yaml.safe_load((ROOT / "configs" / "ud" / f"{recipe}.yaml").read_text(encoding="utf-8"))
    spec["distill"]["method"] = method
    spec["train"]["epochs"] = args.epochs
    if spec["task"]["name"] == "ud-ewt-deps":
        spec["student"]["lstm_layers"] = args.parser_layers
    if gold is not None:
        spec["task"]["gold_fraction"] = gold
        if method == "none":  # it trains on the gold share only: as many steps as the KD rows take on all of train
            spec["train"]["epochs"] = round(args.epochs / gold)
    if teacher is not None:
        spec["teacher"]["model"] = str(teacher_model(teacher))
        spec["cache"] = {"dir": str(cache_dir(spec, teacher))}
    return spec


def cache_dir(spec: dict, teacher: str) -> Path:
    """One cache per teacher (and student vocabulary settings, which decide the kept words under truncation)."""
    folder = WORK / "cache" / teacher
    if not (folder / "manifest.json").is_file():
        kdlab.cache({**spec, "cache": {"dir": str(folder)}}, overwrite=True, progress=False)
    return folder


def evaluate_teacher(name: str) -> Any:
    """A teacher on its own task (an XPOS teacher is scored on XPOS)."""
    recipe, _ = TEACHERS[name]
    return kdlab.evaluate(ROOT / recipe, model=str(teacher_model(name)))


def finished_run(out: Path) -> dict | None:
    """A run of an earlier, interrupted invocation of this script (``--reuse-runs``): its best dev record.

    Its time is the span between the recipe and the last metrics written (data preparation not included).
    """
    metrics, recipe = out / "metrics.jsonl", out / "recipe.yaml"
    if not (out / "student" / "config.json").is_file() or not metrics.is_file():
        return None
    dev = [json.loads(line) for line in metrics.read_text().splitlines() if '"dev"' in line]
    main = "las" if "las" in dev[0] else "accuracy"
    best = max(dev, key=lambda record: record[main])
    scores = {k: v for k, v in best.items() if k not in ("split", "stage", "step")}
    seconds = metrics.stat().st_mtime - recipe.stat().st_mtime
    return {"best": best[main], "dev_metrics": scores, "seconds": seconds, "reused": True}


def run(spec: dict, row: str, group: str, seed: int, reuse: bool = False) -> dict:
    spec = json.loads(json.dumps(spec))
    spec["train"].update(seed=seed, progress_bar=False, checkpoint_every_steps=None)
    out = WORK / "runs" / group / row.replace(" ", "_") / f"seed{seed}"
    spec["output"] = {"dir": str(out), "overwrite": True}
    done = finished_run(out) if reuse else None
    if done is not None:
        return done
    start = time.perf_counter()
    result = kdlab.distill(spec)
    return {
        "best": result.result.best_metric,
        "dev_metrics": result.result.dev_metrics,
        "seconds": time.perf_counter() - start,
        "train_sentences": result.extra.get("train_sentences"),
        "gold_sentences": result.extra.get("gold_sentences"),
    }


def bench_group(group: str, args: argparse.Namespace) -> dict:
    gold = GOLD10 if group.endswith("gold10") else None
    out: dict = {"epochs": args.epochs, "seeds": args.seeds, "gold_fraction": gold, "rows": {}, "teachers": {}}
    for row, recipe, teacher, method in rows(group):
        spec = student_spec(recipe, teacher, method, gold, args)
        if teacher is not None and teacher not in out["teachers"]:
            out["teachers"][teacher] = evaluate_teacher(teacher).metrics
        runs = [run(spec, row, group, seed, args.reuse_runs) for seed in args.seeds]
        keys = runs[0]["dev_metrics"].keys()
        out["rows"][row] = {
            "teacher": teacher,
            "method": method,
            "metrics": {k: summarise([r["dev_metrics"][k] for r in runs]) for k in keys},
            "seconds_per_run": summarise([r["seconds"] for r in runs]),
            "runs": runs,
        }
        main = out["rows"][row]["metrics"][next(iter(keys))]
        print(f"{group} | {row}: {main['mean']:.4f} ± {main['std']:.4f}", flush=True)
    return out


def sizes(group: str, res: dict, args: argparse.Namespace) -> dict:
    """Parameters and CPU latency (batch of 32 dev sentences) of each teacher and of a structural-KD student."""
    out = {}
    for row, recipe, teacher, method in rows(group):
        if method != "structural" or teacher is None or teacher in out:
            continue
        spec = student_spec(recipe, teacher, method, None, args)
        model_dir = WORK / "runs" / group / row.replace(" ", "_") / "seed0" / "student"
        t = evaluate_teacher(teacher)
        s = kdlab.evaluate(spec, model=str(model_dir))
        out[teacher] = {
            "student_row": row,
            "teacher_parameters": t.parameters,
            "student_parameters": s.parameters,
            "teacher_ms_batch32": t.ms_per_batch,
            "student_ms_batch32": s.ms_per_batch,
        }
    return out


def teacher_structure(teacher: str, limit: int = 3000) -> dict:
    """How much a CRF teacher's transitions change its word distributions: its node marginals vs softmax(emissions).

    When they agree, token-level KD on emissions and structural KD teach nearly the same targets.
    """
    from safetensors.torch import load_file

    from kdlab.structured.crf import crf_marginals

    tensors = load_file(str(WORK / "cache" / teacher / "outputs.safetensors"))
    values, offsets, shapes = tensors["values"].float(), tensors["offsets"], tensors["shapes"]
    crf = [tensors[f"extra.{name}"] for name in ("transitions", "start", "end")]
    kl, agree, words = 0.0, 0, 0
    for i in range(min(limit, len(shapes))):
        n, c = (int(x) for x in shapes[i])
        emissions = values[int(offsets[i]) : int(offsets[i]) + n * c].reshape(1, n, c)
        node = crf_marginals(emissions, *crf)[0][0].clamp_min(1e-12)
        local = emissions[0].log_softmax(-1)
        kl += float((node * (node.log() - local)).sum())
        agree += int((node.argmax(-1) == local.argmax(-1)).sum())
        words += n
    return {
        "sentences": min(limit, len(shapes)),
        "kl_marginals_vs_emissions_per_word": kl / words,
        "argmax_agreement": agree / words,
    }


def _cell(stat: dict) -> str:
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def table(results: dict) -> str:
    lines = []
    for group, res in results.items():
        parsing = group.startswith("parsing")
        metrics = ["uas", "las", "uas_punct", "las_punct"] if parsing else ["accuracy"]
        teachers = ", ".join(
            f"{name} {' / '.join(f'{100 * m[k]:.2f}' for k in metrics)}" for name, m in res["teachers"].items()
        )
        gold = f", gold labels for {100 * res['gold_fraction']:.0f} % of train" if res["gold_fraction"] else ""
        lines += [f"### {group} ({res['epochs']} epochs, seeds {res['seeds']}{gold}); teachers: {teachers}", ""]
        if res.get("note"):
            lines += [f"Note: {res['note']}.", ""]
        header = ["row", *metrics, "s/run"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, r in res["rows"].items():
            cells = [row, *(_cell(r["metrics"][k]) for k in metrics), f"{r['seconds_per_run']['mean']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for teacher, st in res.get("teacher_structure", {}).items():
            lines.append(
                f"Teacher {teacher}: KL(CRF marginals ‖ softmax(emissions)) = "
                f"{st['kl_marginals_vs_emissions_per_word']:.4f} nats per word, same argmax on "
                f"{100 * st['argmax_agreement']:.2f} % of words ({st['sentences']} training sentences)."
            )
        for teacher, size in res.get("sizes", {}).items():
            ratio = size["teacher_parameters"] / size["student_parameters"]
            speed = size["teacher_ms_batch32"] / size["student_ms_batch32"]
            lines.append(
                f"Size: teacher {teacher} {size['teacher_parameters'] / 1e6:.1f} M parameters, "
                f"{size['teacher_ms_batch32']:.0f} ms per 32 sentences; student ({size['student_row']}) "
                f"{size['student_parameters'] / 1e6:.1f} M ({ratio:.1f}x fewer), "
                f"{size['student_ms_batch32']:.0f} ms ({speed:.1f}x faster) on CPU."
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--groups",
        nargs="+",
        default=["tagging", "parsing", "tagging-gold10"],
        choices=["tagging", "parsing", "tagging-gold10", "parsing-gold10"],
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--parser-layers", type=int, default=1, help="BiLSTM layers of the parsing students")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--reuse-runs", action="store_true", help="keep runs an interrupted invocation finished")
    parser.add_argument("--sizes-only", action="store_true", help="sizes and latency of finished groups")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = RESULTS / "structural_kd"
    for group in args.groups:
        if args.sizes_only:
            res = json.loads((folder / f"{group}.json").read_text())
            res["sizes"] = sizes(group, res, args)
            crf_teachers = [t for t in res["teachers"] if "crf" in t]
            res["teacher_structure"] = {t: teacher_structure(t) for t in crf_teachers}
            res["sizes_command"] = " ".join(["python bench/structural_kd.py", *sys.argv[1:]])
        else:
            res = bench_group(group, args)
            res.update(
                command=" ".join(["python bench/structural_kd.py", *sys.argv[1:]]),
                date=str(date.today()),
                machine=machine(),
                parser_layers=args.parser_layers,
            )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{group}.json").write_text(json.dumps(res, indent=2))
    results = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    (RESULTS / "structural_kd.md").write_text(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
