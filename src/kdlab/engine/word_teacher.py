"""A word-level teacher's potentials, computed once before training and served per batch.

Structural KD needs the teacher's whole factorised distribution, not one vector per sentence: per-word emissions
(plus the CRF's transitions) of a tagger, or the arc scores of a parser. They are small (``n x C`` or ``(n+1)^2``
numbers per sentence), so the teacher runs once over the training set in length-sorted batches and training never
runs it again: the marginals the losses need (forward-backward, Matrix-Tree) are recomputed from the stored
potentials per batch, which costs far less than a transformer forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.engine.evaluation import length_sorted_batches
from kdlab.engine.teacher import Autocast, TeacherSignals
from kdlab.methods.stages import Stage
from kdlab.models.words import word_model_inputs

CRF_PARAMETERS = ("transitions", "start", "end")


class WordTeacherOutputs:
    """Per-sentence teacher potentials (``rows[i]``: ``[n_i, C]`` emissions or ``[n_i+1, n_i+1]`` arc scores)."""

    def __init__(self, rows: list[Tensor], extras: dict[str, Tensor], parsing: bool) -> None:
        self.rows = rows
        self.extras = extras
        self.parsing = parsing
        self.device = torch.device("cpu")

    @classmethod
    @torch.inference_mode()
    def label(
        cls,
        model: nn.Module,
        items: Sequence[dict[str, Any]],
        collate: Callable[[list[dict[str, Any]]], dict[str, Tensor]],
        batch_size: int,
        device: torch.device,
    ) -> WordTeacherOutputs:
        """Run the teacher once over ``items`` through its own view (``teacher_*`` keys)."""
        model.to(device).eval()
        parsing = hasattr(model.config, "num_rels")
        rows: list[Tensor | None] = [None] * len(items)
        output: Any = None
        for indices in length_sorted_batches(items, batch_size):
            batch = collate([items[i] for i in indices])
            inputs = {k: v.to(device) for k, v in word_model_inputs(batch, prefix="teacher_").items()}
            output = model(**inputs)
            logits = output.logits.float().cpu()
            for row, i in enumerate(indices):
                n = len(items[i]["word_starts"])
                rows[i] = logits[row, : n + 1, : n + 1].clone() if parsing else logits[row, :n].clone()
        extras: dict[str, Tensor] = {}
        if output is not None and not parsing and getattr(output, "transitions", None) is not None:
            extras = {name: getattr(output, name).detach().float().cpu() for name in CRF_PARAMETERS}
        return cls(rows, extras, parsing)  # type: ignore[arg-type]

    def prepare(self, device: torch.device, autocast: Autocast) -> None:
        self.device = device

    def signals(self, stage: Stage, batch: dict[str, Tensor], indices: Sequence[int], split: str) -> TeacherSignals:
        if split != "train":
            raise ValueError("the word teacher was labelled on the training split only")
        words = batch["word_mask"].shape[1]
        size = words + 1 if self.parsing else words
        first = self.rows[indices[0]]
        shape = (len(indices), size, size) if self.parsing else (len(indices), size, first.shape[-1])
        padded = torch.zeros(shape)
        for row, i in enumerate(indices):
            value = self.rows[i]
            if self.parsing:
                padded[row, : value.shape[0], : value.shape[1]] = value
            else:
                padded[row, : value.shape[0]] = value
        extras = {name: value.to(self.device) for name, value in self.extras.items()}
        return TeacherSignals(logits=padded.to(self.device), extras=extras)
