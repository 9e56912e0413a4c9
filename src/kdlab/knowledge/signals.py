"""What a recipe needs from the teacher, as named, signed signals that a cache stores and a recipe looks up.

A signal's *signature* says exactly what it holds (which module, which tokens, which dimensions, which logit
compression, which storage precision); a recipe finds its knowledge in a cache by signature, so one cache can
serve every recipe whose needs it covers (e.g. several students, or a subset of its layers), and a recipe whose
selection differs from what was cached is refused instead of silently trained on the wrong knowledge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdlab.engine.teacher import TeacherSignals, selection_spec
from kdlab.methods.matches import FeatureMatcher, tap_name
from kdlab.methods.objective import Objective
from kdlab.methods.selection import Selected, to_examples


@dataclass(frozen=True)
class Signal:
    """One kind of teacher knowledge: ``match`` is the match index, or None for the logits."""

    signature: str
    kind: str  # "logits" | "topk" | "hidden" | "attention"
    match: int | None
    fields: tuple[tuple[str, str], ...]  # (field suffix, dtype) stored per example

    def field_dtypes(self, name: str) -> dict[str, str]:
        return {f"{name}.{suffix}": dtype for suffix, dtype in self.fields}


def needed_signals(
    matcher: FeatureMatcher, objective: Objective, needs_logits: bool, dtype: str, max_length: int
) -> list[Signal]:
    """The signals the recipe's losses read: the logits (when any stage uses them) and every match's feature."""
    signals = []
    if needs_logits:
        if objective.topk is not None:
            signature = f"topk:k={objective.topk},T={objective.temperature:g}"
            fields = (("logprobs", "float32"), ("indices", "int32"))
            signals.append(Signal(signature, "topk", None, fields))
        else:
            signals.append(Signal("logits", "logits", None, (("values", "float32"),)))
    position_dtype = "int16" if max_length < 2**15 else "int32"
    for i, match in enumerate(matcher.matches):
        if match.is_attention:
            signals.append(Signal(f"attention:{match.teacher}|{dtype}", "attention", i, (("values", dtype),)))
            continue
        spec = selection_spec(matcher, i)
        signature = f"hidden:{match.teacher}|{spec.signature()}|{dtype}"
        if match.ranks_by_attention:
            signature += f"|ranked_by={match.ranking_module}"
        fields = [("values", dtype)]
        if spec.token_rule != "all":
            fields.append(("positions", position_dtype))
        if spec.width < 1 and spec.width_mask == "importance":
            fields.append(("dims", "int16"))
        signals.append(Signal(signature, "hidden", i, tuple(fields)))
    return signals


def per_example_arrays(
    signals: list[Signal], names: dict[str, str], teacher: TeacherSignals, batch_size: int
) -> list[dict[str, np.ndarray]]:
    """Split one batch of teacher knowledge into what is stored per example (only its real tokens)."""
    rows: list[dict[str, np.ndarray]] = [{} for _ in range(batch_size)]
    for signal in signals:
        name = names[signal.signature]
        if signal.kind == "logits":
            assert teacher.logits is not None
            for row, values in zip(rows, teacher.logits.float().cpu().numpy(), strict=True):
                row[f"{name}.values"] = values
        elif signal.kind == "topk":
            assert teacher.topk is not None
            logprobs, indices = (t.cpu().numpy() for t in teacher.topk)
            for j, row in enumerate(rows):
                row[f"{name}.logprobs"], row[f"{name}.indices"] = logprobs[j], indices[j]
        else:
            assert signal.match is not None
            selected: Selected = teacher.feats[tap_name(signal.match)]
            for row, example in zip(rows, to_examples(selected, selected.token_mask.sum(dim=1)), strict=True):
                for suffix, value in example.items():
                    row[f"{name}.{suffix}"] = value
    return rows
