"""Pure loss functions and the registry of feature losses.

Logit losses (:mod:`kdlab.losses.logits`) compare model outputs; feature losses (:mod:`kdlab.losses.features`)
compare hidden states or attention probabilities and are looked up by name in :data:`FEATURE_LOSSES`; structural
losses (:mod:`kdlab.losses.structured`) compare distributions over tag sequences and dependency trees.
"""

from __future__ import annotations

from .features import (
    FeatureLoss,
    attention_kl,
    attention_mse,
    hidden_cosine,
    hidden_mse,
    pkd_normalized_mse,
)
from .logits import hard_ce, kd_mix, logit_mse, regression_mse, soft_kd, soft_kd_topk, teacher_topk
from .multi_teacher import confidence_weights, multi_teacher_kd, multi_teacher_mse
from .online import ensemble_logits, mutual_kd, mutual_mse, online_kd, online_mse
from .structured import (
    CRFPotentials,
    arc_kd,
    crf_kd,
    crf_to_token_kd,
    map_labels,
    sequence_kd,
    token_kd,
    token_to_crf_kd,
)

FEATURE_LOSSES: dict[str, FeatureLoss] = {
    "mse": hidden_mse,
    "cosine": hidden_cosine,
    "pkd": pkd_normalized_mse,
    "attention_kl": attention_kl,
    "attention_mse": attention_mse,
}

# These compare attention probabilities [B, H, L, L], so the matching taps must be of kind "attention".
ATTENTION_LOSSES: frozenset[str] = frozenset({"attention_kl", "attention_mse"})

__all__ = [
    "ATTENTION_LOSSES",
    "FEATURE_LOSSES",
    "CRFPotentials",
    "FeatureLoss",
    "arc_kd",
    "attention_kl",
    "attention_mse",
    "confidence_weights",
    "crf_kd",
    "crf_to_token_kd",
    "ensemble_logits",
    "hard_ce",
    "hidden_cosine",
    "hidden_mse",
    "kd_mix",
    "logit_mse",
    "map_labels",
    "multi_teacher_kd",
    "multi_teacher_mse",
    "mutual_kd",
    "mutual_mse",
    "online_kd",
    "online_mse",
    "pkd_normalized_mse",
    "regression_mse",
    "sequence_kd",
    "soft_kd",
    "soft_kd_topk",
    "teacher_topk",
    "token_kd",
    "token_to_crf_kd",
]
