"""Teacher-labelled data augmentation: extra unlabelled training inputs that only the teacher labels.

Two sources, for any task and any recipe (Tang et al. 2019; Gajbhiye et al. 2021 for quality estimation):

* pools (:mod:`kdlab.augment.pools`): unlabelled inputs from a ready task's split or a file;
* perturbations (:mod:`kdlab.augment.perturb`): masked / replaced / deleted / swapped / n-gram-cut copies of
  the training inputs.

The flow is ``candidates`` (all augmented inputs, deduplicated, without any train or dev input), then the
teacher labels them (done by the caller, usually through the teacher cache), then ``select`` keeps a subset:
all of them, a random subsample, or those whose teacher outputs match the distribution of the teacher's outputs
on the training data (:func:`kdlab.augment.filter.match_distribution`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdlab.augment.filter import match_distribution, subsample
from kdlab.augment.perturb import perturb
from kdlab.augment.pools import read_pool
from kdlab.config import AugmentConfig
from kdlab.data.tasks import Example, TaskSpec

__all__ = [
    "AugmentReport",
    "candidates",
    "match_distribution",
    "perturb",
    "read_pool",
    "select",
    "subsample",
]


@dataclass(frozen=True)
class AugmentReport:
    """What :func:`candidates` produced: inputs per source (before dropping) and what was dropped.

    ``dropped_overlap`` counts inputs equal to a train or dev input (checked first); ``dropped_duplicates``
    counts repeats of an input already kept.
    """

    from_pools: int
    from_perturbation: int
    dropped_duplicates: int
    dropped_overlap: int

    @property
    def kept(self) -> int:
        """Number of candidates returned."""
        return self.from_pools + self.from_perturbation - self.dropped_duplicates - self.dropped_overlap

    def summary(self) -> str:
        """One line for the run log."""
        return (
            f"augmentation: {self.kept} candidate inputs ({self.from_pools} from pools, {self.from_perturbation} "
            f"perturbed; dropped {self.dropped_duplicates} duplicates and {self.dropped_overlap} equal to a train "
            "or dev input)"
        )


def candidates(
    train: Sequence[Example],
    cfg: AugmentConfig,
    *,
    task: TaskSpec,
    data_root: str | Path | None,
    mask_token: str,
    exclude_uids: Collection[str],
) -> tuple[list[Example], AugmentReport]:
    """All augmented inputs of ``cfg``, unlabelled, in a deterministic order, with counts.

    Order: every pool's inputs (pools in config order, each in file order), then the perturbations of ``train``
    (``cfg.perturb``, seeded by ``cfg.seed``; example order, copies in order). Then, keeping the first
    occurrence, an input is dropped when its uid is in ``exclude_uids`` or was already kept. The caller passes
    the train and dev uids: a dev input must never be trained on (it would leak the evaluation data through the
    teacher's labels), and a train input is already trained on with its gold label.
    """
    exclude = set(exclude_uids)
    pooled: list[Example] = []
    for index, pool in enumerate(cfg.pools):
        pooled.extend(read_pool(pool, index, task, data_root, seed=cfg.seed))
    perturbed = perturb(train, cfg.perturb, mask_token=mask_token, seed=cfg.seed)

    kept: list[Example] = []
    seen: set[str] = set()
    duplicates = overlap = 0
    for example in (*pooled, *perturbed):
        if example.uid in exclude:
            overlap += 1
        elif example.uid in seen:
            duplicates += 1
        else:
            seen.add(example.uid)
            kept.append(example)
    report = AugmentReport(
        from_pools=len(pooled),
        from_perturbation=len(perturbed),
        dropped_duplicates=duplicates,
        dropped_overlap=overlap,
    )
    return kept, report


def _reduce(outputs: np.ndarray, discrete: bool) -> np.ndarray:
    values = np.asarray(outputs)
    # Classification logits [N, C] become the teacher's predicted classes, the values whose distribution counts.
    if discrete and values.ndim == 2 and values.shape[1] > 1:
        return values.argmax(axis=1)
    return values


def select(
    candidates_count: int,
    cfg: AugmentConfig,
    original_outputs: np.ndarray | None,
    candidate_outputs: np.ndarray | None,
    discrete: bool,
) -> np.ndarray:
    """Sorted indices of the candidates to train on, by ``cfg.filter``.

    * ``"none"``: a seeded uniform subsample of ``cfg.max_examples`` (all when unset); outputs are not needed.
    * ``"match_teacher"``: :func:`~kdlab.augment.filter.match_distribution` of the teacher's outputs on the
      candidates against its outputs on the original training inputs (``cfg.filter_bins`` quantile bins when
      not ``discrete``), at most ``cfg.max_examples``. Both output arrays are required (ValueError otherwise).
      Outputs are one value per example ([N] or [N, 1]); with ``discrete``, class logits [N, C] are reduced
      to predicted classes.
    """
    if candidates_count < 0:
        raise ValueError(f"candidates_count must be non-negative, got {candidates_count}")
    if cfg.filter == "none":
        return subsample(candidates_count, cfg.max_examples, cfg.seed)
    if cfg.filter != "match_teacher":
        raise ValueError(f"unknown augment filter {cfg.filter!r}")
    if original_outputs is None or candidate_outputs is None:
        raise ValueError("filter 'match_teacher' needs the teacher's outputs on the original and candidate inputs")
    original = _reduce(original_outputs, discrete)
    scored = _reduce(candidate_outputs, discrete)
    if len(scored) != candidates_count:
        raise ValueError(f"candidate_outputs has {len(scored)} rows for {candidates_count} candidates")
    return match_distribution(
        original, scored, bins=cfg.filter_bins, discrete=discrete, max_examples=cfg.max_examples, seed=cfg.seed
    )
