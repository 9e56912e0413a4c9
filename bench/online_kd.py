"""Online KD among peers on Fashion-MNIST: no pre-trained teacher, peers teach each other vs independent students.

Students: CNNs of width 8 (2 conv blocks, ~9.1k parameters; configs/fashion/kd-cnn.yaml settings), trained on the
same fixed subset of the training images. Rows:
    independent   --peers students trained alone on gold labels (method none), one per seed offset: what training the
                  peers without any exchange gives
    mean          online KD, each peer taught by the mean of the peers' logits (T = 4, alpha = 0.5)
    learned       online KD with a learned gate weighing the peers per example (OKDHP-style aggregation)
    mutual        DML: each peer taught by every other peer
Columns: dev accuracy of peer 0 (the peer that is kept as the student; best epoch), the mean of all peers' final
accuracies, and the accuracy of the peers' averaged logits (what an ensemble of all of them would give).

    python bench/online_kd.py --threads 1        # 3 seeds
    python bench/online_kd.py --table-only

Writes bench/results/online_kd.{json,md}. Needs Debian's dataset-fashion-mnist (or $KDLAB_FASHION_MNIST).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import cell, once, provenance, write_results

import kdlab
from kdlab.config import TaskConfig
from kdlab.data.images import collate_images, load_image_data
from kdlab.models.images import image_logits, load_image_model

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "online_kd"
ROWS = {
    "independent": "independent students (no exchange)",
    "mean": "online KD, mean of peers",
    "learned": "online KD, learned gate",
    "mutual": "DML (mutual KL)",
}


def recipe(args: argparse.Namespace, row: str, seed: int, out: Path) -> dict:
    distill = {"method": "none"}
    if row != "independent":
        online = {"peers": args.peers, "aggregate": row}
        distill = {"method": "online", "temperature": 4.0, "alpha": 0.5, "online": online}
    return {
        "task": {"name": "fashion-mnist", "max_train_examples": args.train_examples},
        "teacher": {"model": "cnn"},
        "student": {"kind": "cnn", "width": args.width},
        "distill": distill,
        "train": {
            "epochs": args.epochs,
            "batch_size": 128,
            "eval_batch_size": 512,
            "lr": 2e-2,
            "seed": seed,
            "progress_bar": False,
            "checkpoint_every_steps": None,
        },
        "output": {"dir": str(out), "overwrite": True},
    }


def dev_logits(folder: Path, dev: list) -> torch.Tensor:
    return image_logits(load_image_model(folder), dev, 512, torch.device("cpu"))


def run(args: argparse.Namespace, row: str, seed: int, dev: list, labels: torch.Tensor) -> dict:
    out = WORK / row / f"seed{seed}"

    def train() -> dict:
        if row == "independent":  # the peers one by one, each alone, with the seeds an online run gives them
            summaries = [kdlab.distill(recipe(args, row, seed + i, out / f"peer-{i}")) for i in range(args.peers)]
            folders = [summary.model_dir for summary in summaries]
            best = summaries[0].result.best_metric
        else:
            summary = kdlab.distill(recipe(args, row, seed, out))
            folders = [out / "peers" / f"peer-{i}" for i in range(args.peers)]
            best = summary.result.best_metric
        logits = [dev_logits(folder, dev) for folder in folders]
        accuracy = [float((x.argmax(-1) == labels).float().mean()) for x in logits]
        ensemble = float((torch.stack(logits).mean(0).argmax(-1) == labels).float().mean())
        return {"best": best, "peer0_final": accuracy[0], "peers_final": accuracy, "ensemble": ensemble}

    result = once(out, train)
    print(f"{row:12s} seed {seed}: peer 0 {result['best']:.4f}, ensemble {result['ensemble']:.4f}", flush=True)
    return result


def table(results: dict) -> str:
    lines = [
        f"Fashion-MNIST dev accuracy (10,000 test images), mean ± std over seeds; {results['peers']} CNN peers of "
        f"width {results['width']}, {results['train_examples']} training images, {results['epochs']} epochs.",
        "",
        "| training | peer 0, best epoch | mean of all peers (kept checkpoints) | averaged logits of all peers |",
        "|---|---|---|---|",
    ]
    for row, label in ROWS.items():
        found = [json.loads(p.read_text()) for p in sorted((WORK / row).glob("seed*/bench_result.json"))]
        peers = [sum(r["peers_final"]) / len(r["peers_final"]) for r in found]
        lines.append(
            f"| {label} | {cell([r['best'] for r in found])} | {cell(peers)} | {cell([r['ensemble'] for r in found])} |"
        )
    return "\n".join(lines)


def main() -> None:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--train-examples", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="where runs go (a smoke test points it elsewhere)")
    args = parser.parse_args()
    WORK = args.work or WORK
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = load_image_data(TaskConfig(name="fashion-mnist")).dev
    labels = collate_images(dev)["labels"]
    if not args.table_only:
        for seed in args.seeds:
            for row in args.rows:
                run(args, row, seed, dev, labels)
    results = {
        **provenance("online_kd"),
        "peers": args.peers,
        "width": args.width,
        "train_examples": args.train_examples,
        "epochs": args.epochs,
    }
    if args.work is None:
        write_results("online_kd", {**results, "table": table(results)}, table(results))
    print(table(results))


if __name__ == "__main__":
    main()
