"""Choosing which augmented inputs to keep: matching the teacher's output distribution, or a plain subsample.

Augmented inputs (perturbations, unlabelled pools) rarely look to the teacher like the training data: masked
or cut sentences drift towards neutral scores, an out-of-domain pool may be mostly one class. Training the
student on them as they come shifts its output distribution. :func:`match_distribution` keeps a subset whose
teacher outputs are distributed like the teacher's outputs on the original training inputs (the filtering of
Gajbhiye et al. 2021 for quality estimation, in a form that serves any task).
"""

from __future__ import annotations

import numpy as np


def subsample(n: int, max_examples: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform subset of ``range(n)`` of size ``max_examples`` (all when ``None``
    or when ``n`` is not larger).

    Uses the legacy ``RandomState`` permutation, like ``load_examples(limit=...)``: its stream is frozen across
    numpy versions, so the same recipe keeps the same inputs (and their cached teacher outputs) everywhere.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if max_examples is not None and max_examples < 0:
        raise ValueError(f"max_examples must be non-negative, got {max_examples}")
    if max_examples is None or max_examples >= n:
        return np.arange(n, dtype=np.int64)
    chosen = np.random.RandomState(seed).permutation(n)[:max_examples]
    return np.sort(chosen).astype(np.int64)


def _as_values(outputs: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(outputs)
    # A regression head's [N, 1] scores are one value per example; wider outputs must be reduced by the caller.
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            f"{name} must hold one value per example ([N] or [N, 1]), got shape {values.shape}; "
            "reduce class logits to predicted classes (argmax) first"
        )
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {values.dtype}")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds non-finite values")
    return values


def _bin_of(original: np.ndarray, values: np.ndarray, bins: int, discrete: bool) -> tuple[np.ndarray, int]:
    """Bin index of each value (``-1``: a value no original example has, discrete mode only) and the bin count."""
    if discrete:
        levels = np.unique(original)
        position = np.searchsorted(levels, values)
        found = position < len(levels)
        found[found] = levels[position[found]] == values[found]
        return np.where(found, position, -1), len(levels)
    # Interior edges only: the first and last bins are open-ended, so a candidate scored beyond the original
    # range still lands in an end bin. side="right" puts a value equal to an edge in the upper bin, the same
    # rule for originals and candidates; tied edges just leave empty bins (p_b = 0), which take nothing.
    edges = np.quantile(original.astype(np.float64), np.arange(1, bins) / bins)
    return np.searchsorted(edges, values, side="right"), bins


def match_distribution(
    original: np.ndarray,
    candidates: np.ndarray,
    *,
    bins: int,
    discrete: bool,
    max_examples: int | None,
    seed: int,
) -> np.ndarray:
    """Sorted indices into ``candidates`` whose values are distributed like ``original``'s.

    ``original``: the teacher's outputs on the original training inputs, one value each ([N] or [N, 1]);
    ``candidates``: the teacher's outputs on the augmented inputs. For classification pass predicted classes
    with ``discrete=True``; for regression pass scores with ``discrete=False``.

    Algorithm:

    1. Bins come from ``original`` alone. Discrete: one bin per distinct value. Continuous: ``bins``
       equal-mass bins cut at the ``k / bins`` quantiles of ``original`` (k = 1..bins-1); the first and last
       bins are open-ended, so candidates outside the original range fall into the end bins.
    2. ``p_b`` = share of the original values in bin b, ``n_b`` = number of candidates in bin b.
    3. The kept total is ``M = min(max_examples, min over bins with p_b > 0 of n_b / p_b)``, floored: the
       largest set with the original's proportions that the scarcest bin allows.
    4. Bin b gets ``M * p_b`` places, rounded by largest remainders (each bin is within one of ``M * p_b``
       and the places add up to exactly ``M``, so ``max_examples`` is never exceeded; plain rounding could).
       Since ``M * p_b <= n_b``, every bin has enough candidates.
    5. Each bin's places are filled by drawing its candidates uniformly without replacement (seeded).
       Candidates in bins with ``p_b = 0`` (a class the teacher never predicts on the training data) are
       dropped.

    Deterministic given ``seed``; uses exact integer arithmetic for steps 2-4.
    """
    if bins < 2 and not discrete:
        raise ValueError(f"bins must be at least 2, got {bins}")
    if max_examples is not None and max_examples < 0:
        raise ValueError(f"max_examples must be non-negative, got {max_examples}")
    original = _as_values(original, "original")
    candidates = _as_values(candidates, "candidates")
    if len(original) == 0:
        raise ValueError("original holds no values: the distribution to match is undefined")
    if len(candidates) == 0:
        return np.zeros(0, dtype=np.int64)

    original_bins, count = _bin_of(original, original, bins, discrete)
    candidate_bins, _ = _bin_of(original, candidates, bins, discrete)
    orig_counts = np.bincount(original_bins, minlength=count).astype(np.int64)
    cand_counts = np.bincount(candidate_bins[candidate_bins >= 0], minlength=count).astype(np.int64)
    total_orig = int(orig_counts.sum())

    # n_b / p_b = n_b * N / c_b, floored in integers; the minimum over populated bins is the limit of step 3.
    populated = np.flatnonzero(orig_counts)
    kept = min(int(cand_counts[b]) * total_orig // int(orig_counts[b]) for b in populated)
    if max_examples is not None:
        kept = min(kept, max_examples)

    shares = [kept * int(orig_counts[b]) for b in range(count)]
    places = [share // total_orig for share in shares]
    remainders = [share % total_orig for share in shares]
    leftover = kept - sum(places)
    # Largest remainder first; ties go to the lower bin so the result does not depend on sort stability.
    for b in sorted(range(count), key=lambda b: (-remainders[b], b))[:leftover]:
        places[b] += 1

    rng = np.random.RandomState(seed)
    chosen: list[np.ndarray] = []
    for b in range(count):
        members = np.flatnonzero(candidate_bins == b)
        order = rng.permutation(len(members))
        chosen.append(members[order[: places[b]]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
