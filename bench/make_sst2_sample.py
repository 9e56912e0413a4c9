"""Rebuild the SST-2 sample shipped in the package (src/kdlab/resources/sst2_sample).

Draws 3000 rows of the shared SST-2 train file and 600 rows of its dev file with a fixed seed, keeps them
in file order and copies each line byte for byte (header ``sentence<TAB>label`` included). Run from the
repository root:

    .venv/bin/python bench/make_sst2_sample.py [--source ../shared/data/sst2]

Running it again with the same source files gives identical output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 20240601
SIZES = {"train.tsv": 3000, "dev.tsv": 600}
HEADER = "sentence\tlabel\n"


def sample_lines(source: Path, size: int, seed: int) -> list[str]:
    """The header plus ``size`` data lines of ``source`` drawn with ``seed``, in their original order."""
    with source.open("r", encoding="utf-8", newline="") as handle:
        lines = handle.readlines()
    if lines[0] != HEADER:
        raise SystemExit(f"{source}: expected the header {HEADER!r}, found {lines[0]!r}")
    data = lines[1:]
    if size > len(data):
        raise SystemExit(f"{source}: wants {size} rows but the file has {len(data)}")
    # Legacy RandomState: its stream is fixed across numpy versions, so the sample is reproducible.
    chosen = sorted(np.random.RandomState(seed).choice(len(data), size=size, replace=False).tolist())
    return [HEADER] + [data[i] for i in chosen]


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=root.parent / "shared" / "data" / "sst2")
    parser.add_argument("--out", type=Path, default=root / "src" / "kdlab" / "resources" / "sst2_sample")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for offset, (name, size) in enumerate(SIZES.items()):
        lines = sample_lines(args.source / name, size, SEED + offset)
        with (args.out / name).open("w", encoding="utf-8", newline="") as handle:
            handle.writelines(lines)
        print(f"wrote {args.out / name}: {len(lines) - 1} rows")


if __name__ == "__main__":
    main()
