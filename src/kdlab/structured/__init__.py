"""Structured prediction as pure functions over potentials: a linear-chain CRF (:mod:`kdlab.structured.crf`) and
non-projective dependency trees by the Matrix-Tree theorem (:mod:`kdlab.structured.tree`)."""

from __future__ import annotations

from kdlab.structured.crf import (
    PAD_TAG,
    crf_kbest,
    crf_log_partition,
    crf_marginals,
    crf_sequence_score,
    crf_viterbi,
)
from kdlab.structured.tree import tree_arc_marginals, tree_log_partition, tree_score

__all__ = [
    "PAD_TAG",
    "crf_kbest",
    "crf_log_partition",
    "crf_marginals",
    "crf_sequence_score",
    "crf_viterbi",
    "tree_arc_marginals",
    "tree_log_partition",
    "tree_score",
]
