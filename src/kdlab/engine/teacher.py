"""Where a step's teacher knowledge comes from: a live teacher, or a cache written once by `kdlab cache`.

Both sources hand the loss the same :class:`TeacherSignals`: logits (dense, or top-k with the rest as one bucket)
and, per match, the *selected* teacher features (:class:`~kdlab.methods.selection.Selected`: chosen tokens and
dimensions, with their positions so the student is compared on exactly the same entries). The selection runs
here for a live teacher and in `kdlab cache` before storing, through the same :func:`teacher_signals`, which is
why a cache and a live teacher are interchangeable in a recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from kdlab.data.encoding import teacher_inputs
from kdlab.engine.evaluation import length_sorted_batches
from kdlab.losses import teacher_topk
from kdlab.methods.matches import FeatureMatcher, tap_name
from kdlab.methods.objective import Objective
from kdlab.methods.selection import Selected, SelectionSpec, cls_attention, select_teacher
from kdlab.methods.stages import Stage
from kdlab.taps import FeatureTaps, TapSpec

Autocast = Callable[[], Any]


@dataclass
class TeacherSignals:
    """What the loss needs from the teacher for one batch; fields the stage does not use stay empty."""

    logits: Tensor | None = None
    topk: tuple[Tensor, Tensor] | None = None  # (log-probabilities at T, class indices), both [B, k]
    feats: dict[str, Selected] = field(default_factory=dict)  # by tap_name(match index)
    # Further teacher outputs by name, e.g. a CRF tagger's "transitions" [C, C], "start" [C], "end" [C].
    extras: dict[str, Tensor] = field(default_factory=dict)


class TeacherSource(Protocol):
    def prepare(self, device: torch.device, autocast: Autocast) -> None: ...

    def signals(self, stage: Stage, batch: dict[str, Tensor], indices: Sequence[int], split: str) -> TeacherSignals:
        """Teacher knowledge for ``batch``; ``indices`` are the batch's item positions in the ``split`` list."""
        ...


def selection_spec(matcher: FeatureMatcher, index: int) -> SelectionSpec:
    match = matcher.matches[index]
    # The random width mask is fixed (seed 0) so that students trained with different seeds share one cache.
    return SelectionSpec(tokens=match.tokens, width=match.width, width_mask=match.width_mask, seed=0)


def ranking_tap(index: int) -> str:
    return f"{tap_name(index)}.rank"


def teacher_tap_specs(matcher: FeatureMatcher, active: tuple[int, ...]) -> dict[str, TapSpec]:
    """The teacher taps of the active matches, plus the attention modules that rank tokens for them."""
    specs = matcher.tap_specs("teacher", active)
    for i in active:
        match = matcher.matches[i]
        if match.ranks_by_attention:
            specs[ranking_tap(i)] = TapSpec(match.ranking_module, "attention")
    return specs


def teacher_signals(
    matcher: FeatureMatcher,
    objective: Objective,
    active: tuple[int, ...],
    feats: dict[str, Tensor],
    logits: Tensor | None,
    batch: dict[str, Tensor],
    sep_token_id: int | None,
) -> TeacherSignals:
    """Apply each match's selection (tokens, width) and the logit compression to raw teacher outputs."""
    mask = batch["attention_mask"]
    sep = batch["input_ids"] == sep_token_id if sep_token_id is not None else None
    signals = TeacherSignals()
    if logits is not None:
        if objective.topk is not None:
            signals.topk = teacher_topk(logits, objective.topk, objective.temperature)
        else:
            signals.logits = logits
    for i in active:
        value = feats[tap_name(i)]
        if matcher.matches[i].is_attention:
            signals.feats[tap_name(i)] = Selected(values=value, token_mask=mask.bool(), positions=None, dims=None)
            continue
        ranking = feats.get(ranking_tap(i))
        scores = cls_attention(ranking) if ranking is not None else None
        if value.dim() == 2:  # one vector per example (e.g. a pooler output): a one-token sequence
            one = torch.ones(value.shape[0], 1, dtype=mask.dtype, device=value.device)
            selected = select_teacher(selection_spec(matcher, i), value.unsqueeze(1), one)
        else:
            selected = select_teacher(selection_spec(matcher, i), value, mask, scores, sep)
        signals.feats[tap_name(i)] = selected
    return signals


def _detached(signals: TeacherSignals) -> TeacherSignals:
    """Inference-mode tensors cannot be saved for backward; a clone outside the mode is a normal tensor."""

    def clone(t: Tensor | None) -> Tensor | None:
        return t.clone() if t is not None else None

    feats = {
        name: dataclasses.replace(
            s,
            values=s.values.clone(),
            token_mask=s.token_mask.clone(),
            positions=clone(s.positions),
            dims=clone(s.dims),
        )
        for name, s in signals.feats.items()
    }
    topk = (signals.topk[0].clone(), signals.topk[1].clone()) if signals.topk is not None else None
    extras = {name: value.clone() for name, value in signals.extras.items()}
    return TeacherSignals(clone(signals.logits), topk, feats, extras)


class LiveTeacher:
    """The teacher model itself, frozen, run under inference mode and cut after its deepest needed module."""

    def __init__(self, model: nn.Module, matcher: FeatureMatcher, objective: Objective, sep_token_id: int | None):
        self.model = model
        self.matcher = matcher
        self.objective = objective
        self.sep_token_id = sep_token_id
        self.autocast: Autocast = contextlib.nullcontext
        self._taps: dict[Stage, FeatureTaps | None] = {}

    def prepare(self, device: torch.device, autocast: Autocast) -> None:
        self.model.to(device).eval().requires_grad_(False)
        self.autocast = autocast

    def taps(self, stage: Stage) -> FeatureTaps | None:
        if stage not in self._taps:
            needs_logits = self.objective.needs_teacher_logits(stage)
            taps = None
            if needs_logits or stage.matches:
                specs = teacher_tap_specs(self.matcher, stage.matches)
                taps = FeatureTaps(self.model, specs, stop_early=not needs_logits)
            self._taps[stage] = taps
        return self._taps[stage]

    def signals(self, stage: Stage, batch: dict[str, Tensor], indices: Sequence[int], split: str) -> TeacherSignals:
        taps = self.taps(stage)
        if taps is None:
            return TeacherSignals()
        inputs = teacher_inputs(batch)
        with torch.inference_mode(), self.autocast():
            feats, output = taps(**inputs)
            logits = output.logits if output is not None else None
            signals = teacher_signals(
                self.matcher, self.objective, stage.matches, feats, logits, inputs, self.sep_token_id
            )
        return _detached(signals)


@torch.inference_mode()
def label_outputs(
    model: nn.Module,
    items: Sequence[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], dict[str, Tensor]],
    batch_size: int,
    device: torch.device,
) -> Tensor:
    """The teacher's logits for every item, in item order, computed once (length-sorted batches, no grad).

    The teacher reads its own view of each item (``teacher_inputs``), so this also labels the items of a
    student that has another tokenizer.
    """
    model.to(device).eval()
    rows: list[Tensor | None] = [None] * len(items)
    for indices in length_sorted_batches(items, batch_size):
        batch = collate([items[i] for i in indices])
        inputs = {k: v.to(device) for k, v in teacher_inputs(batch).items()}
        logits = model(**inputs).logits.float().cpu()
        for row, i in enumerate(indices):
            rows[i] = logits[row]
    if not rows:
        return torch.zeros(0, 0)
    return torch.stack(rows)  # type: ignore[arg-type]


class FixedOutputs:
    """Teacher outputs computed once before training (``teacher.label_once``), read by item index.

    For a recipe that only matches outputs, labelling every example once replaces one teacher forward per
    example *per epoch* (Gajbhiye et al. train QE students for 50 epochs on precomputed teacher scores).
    """

    def __init__(self, logits: dict[str, Tensor], objective: Objective) -> None:
        self.logits = logits
        self.objective = objective
        self.device = torch.device("cpu")

    def prepare(self, device: torch.device, autocast: Autocast) -> None:
        self.device = device

    def signals(self, stage: Stage, batch: dict[str, Tensor], indices: Sequence[int], split: str) -> TeacherSignals:
        if not self.objective.needs_teacher_logits(stage):
            return TeacherSignals()
        logits = self.logits[split][torch.as_tensor(list(indices), dtype=torch.long)].to(self.device)
        if self.objective.topk is not None:
            return TeacherSignals(topk=teacher_topk(logits, self.objective.topk, self.objective.temperature))
        return TeacherSignals(logits=logits)
