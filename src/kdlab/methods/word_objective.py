"""The per-step objective of word-level tasks (tagging, dependency parsing): gold loss mixed with a KD term.

Total, with ``λ_e = α · max(0, 1 − r · e)`` at epoch ``e`` (teacher annealing, Clark et al. 2019; ``r`` the
``anneal_rate``, ``r = 0`` / ``None``: ``λ = α``):

    L = (1 − λ) · L_gold + λ · L_kd          (method none: L = L_gold; λ = 1: L = L_kd, no gold needed)

Gold terms (labelled words only: a word is labelled when its gold is not IGNORE_LABEL; sentences are averaged):

* softmax tagger:  ``L_gold = (1/|S|) Σ_{b∈S} Σ_{i labelled} −log softmax(e_b,i)[y_b,i]``, ``S`` the sentences
  with at least one labelled word;
* CRF tagger:      ``L_gold = (1/|F|) Σ_{b∈F} −log P_s(y_b)`` (:func:`crf_sequence_logprob`), ``F`` the sentences
  whose real words are ALL labelled (a CRF needs a whole sequence);
* parser:          ``L_gold = (1/|S|) Σ_{b∈S} Σ_{d labelled} [−log p_s(h_d | d) − log softmax(r_b[h_d, d])[l_d]]``,
  ``p_s(h | d) = softmax_h(arc[h, d])`` over the heads ``h ∈ 0..n, h ≠ d``; the relation term at the gold head
  counts where the relation is labelled.

No labelled sentence in the batch: ``L_gold`` is a zero that keeps the student's outputs in the graph.

KD terms (every sentence of the batch, real words only; ``T`` the temperature, applied to both sides, loss × T²,
see :mod:`kdlab.losses.structured`):

* ``structural`` (Wang et al. 2021), by the heads of teacher and student:

  - CRF -> CRF:          :func:`crf_kd` = ``T² KL(P_t^T ‖ P_s^T)`` over whole sequences;
  - CRF -> softmax:      :func:`crf_to_token_kd`: per word ``KL(P_t^T(y_i) ‖ q_i^T)`` with the teacher's marginals;
  - softmax -> CRF:      :func:`token_to_crf_kd` with ``p_t = softmax(e_t / T)``;
  - softmax -> softmax:  :func:`token_kd` with ``p_t = softmax(e_t / T)``;
  - case 4 (teacher over other labels, ``label_map M [Ct, Cs] = P(student label | teacher label)``): the teacher's
    tempered node/edge marginals (a softmax teacher: ``p_t`` and ``p_t,i ⊗ p_t,i+1``) are mapped by
    :func:`map_labels`, then :func:`crf_kd_from_marginals` (CRF student) or :func:`token_kd` (softmax student). For
    the CRF student the mapped chain's entropy ``H = Σ_i H(node_i) − Σ_i I(edge_i)`` is subtracted, so the loss is
    0 at the best CRF (the Markov chain with those marginals); it is constant in the student and leaves the
    gradient of the cross-entropy unchanged.

* ``token`` (baseline, whatever the heads): :func:`token_kd` of the student's emissions against
  ``softmax(e_t / T)`` (mapped by ``M`` in case 4).
* ``topk`` (Kim & Rush 2016): the teacher's ``k`` best sequences ``y_1..y_k`` (:func:`crf_kbest` of its potentials; a
  softmax teacher has zero transitions/start/end), ``w = softmax_k(s_t(y_k) / T)`` (:func:`kbest_weights`),
  ``L_kd = (1/B) Σ_b −Σ_k w_k log P_s(y_k)`` (:func:`sequence_kd`). In case 4 each teacher tag becomes its most
  probable student tag ``argmax_y M[x, y]`` (a sequence has one tag per word; a soft map has no sequence form).
* parsing, ``structural``: :func:`arc_kd` = ``T² Σ_d KL(μ_·d ‖ p_s^T(· | d))``, ``μ`` the arc marginals of the
  teacher's tree distribution (Matrix-Tree) at ``T``; parsing ``token``: ``T² Σ_d KL(p_t^T(· | d) ‖ p_s^T(· | d))``
  with ``p^T(h | d) = softmax_h(arc[h, d] / T)`` (local head distributions); parsing ``topk`` is not defined.

Which case applies is read from each call's inputs: the teacher is a CRF iff ``"transitions"`` is in
``teacher.extras``, the student iff its output's ``transitions`` is not ``None``, case 4 iff a ``label_map`` was
given.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.config import WORD_METHODS
from kdlab.data.encoding import IGNORE_LABEL
from kdlab.losses.logits import _compute_dtype
from kdlab.losses.structured import (
    CRFPotentials,
    arc_kd,
    crf_kd,
    crf_kd_from_marginals,
    crf_sequence_logprob,
    crf_to_token_kd,
    kbest_weights,
    map_labels,
    sequence_kd,
    token_kd,
    token_sequence_logprob,
    token_to_crf_kd,
)
from kdlab.methods.matches import FeatureMatcher
from kdlab.methods.objective import StepLoss, TrainingHooks
from kdlab.methods.stages import Stage
from kdlab.structured.crf import PAD_TAG, crf_kbest, crf_marginals

if TYPE_CHECKING:
    from kdlab.engine.teacher import TeacherSignals

__all__ = ["WORD_METHODS", "WordObjective", "annealed_lambda", "chain_entropy"]

TASKS = ("tagging", "parsing")


def annealed_lambda(alpha: float, anneal_rate: float | None, epoch: int) -> float:
    """``λ_e = α · max(0, 1 − anneal_rate · e)``; ``anneal_rate`` ``None`` or 0 keeps ``λ = α``."""
    if not anneal_rate:
        return float(alpha)
    return float(alpha) * max(0.0, 1.0 - float(anneal_rate) * epoch)


class WordObjective(TrainingHooks):
    """Gold loss and KD term of a word-level student; pure arithmetic over already computed outputs.

    ``student_output`` is the student's whole model output: ``.logits [B, W, Cs]`` emissions and ``.transitions
    [Cs, Cs] | None``, ``.start``, ``.end`` for a tagger; ``.logits [B, W+1, W+1]`` arc scores ([b, head, dep],
    node 0 = ROOT) and ``.rel_logits [B, W+1, W+1, R]`` for a parser. The teacher's are in ``TeacherSignals``:
    ``logits`` (emissions ``[B, W, Ct]`` or arc scores) and, for a CRF tagger, ``extras`` "transitions", "start",
    "end". Words are the batch's ``word_mask [B, W]``; gold labels are ``batch[field]`` (tagging) or
    ``batch["heads"]`` / ``batch["deprels"]`` (parsing).
    """

    def __init__(
        self,
        method: str,
        alpha: float,
        temperature: float = 1.0,
        kbest: int | None = None,
        anneal_rate: float | None = None,
        task: str = "tagging",
        field: str = "upos",
        label_map: Tensor | None = None,
    ) -> None:
        if method not in WORD_METHODS:
            raise ValueError(f"unknown word KD method {method!r}; choose from {', '.join(WORD_METHODS)}")
        if task not in TASKS:
            raise ValueError(f"unknown word task {task!r}; choose from {', '.join(TASKS)}")
        if not (isinstance(alpha, (int, float)) and 0.0 <= float(alpha) <= 1.0):
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if anneal_rate is not None and not (isinstance(anneal_rate, (int, float)) and anneal_rate >= 0):
            raise ValueError(f"anneal_rate must be a number >= 0 (or None), got {anneal_rate!r}")
        if method == "topk":
            if task == "parsing":
                raise ValueError("topk is for taggers (sequence-level KD over tag sequences), not for parsing")
            if isinstance(kbest, bool) or not isinstance(kbest, int) or kbest < 1:
                raise ValueError(f"method topk needs kbest, an integer >= 1, got {kbest!r}")
        if label_map is not None:
            if task == "parsing":
                raise ValueError("label_map maps tag sets; it does not apply to parsing")
            if label_map.ndim != 2:
                raise ValueError(f"label_map must be 2-D [Ct, Cs], got shape {tuple(label_map.shape)}")
            if bool((label_map < 0).any()) or not torch.allclose(
                label_map.sum(dim=1).double(), torch.ones(label_map.shape[0], dtype=torch.float64), atol=1e-4
            ):
                raise ValueError("label_map must be non-negative with rows summing to 1 (P(student | teacher label))")
        self.method = method
        self.alpha = 0.0 if method == "none" else float(alpha)
        self.temperature = float(temperature)
        self.kbest = kbest
        self.anneal_rate = anneal_rate
        self.task = task
        self.field = field
        self.label_map = label_map
        # Read by the teacher sources of the sentence tasks: word teachers hand over dense outputs.
        self.topk = None
        self.lam = self.alpha

    # ------------------------------------------------------------------------------------------------------------
    # the trainer's interface

    def student_view(self, output: Any) -> Any:
        """The loss reads the student's whole output (emissions and CRF parameters, or arc and relation scores)."""
        return output

    def start_epoch(self, epoch: int) -> None:
        """Set ``λ`` for ``epoch`` (0-based): ``α · max(0, 1 − anneal_rate · epoch)``."""
        self.lam = annealed_lambda(self.alpha, self.anneal_rate, epoch)

    def needs_teacher_logits(self, stage: Stage) -> bool:
        # On alpha, not on the annealed lambda: a teacher source decides once per stage.
        return stage.use_logits and self.alpha > 0

    def needs_student_logits(self, stage: Stage) -> bool:
        return True

    def __call__(
        self,
        stage: Stage,
        matcher: FeatureMatcher,
        student_output: Any,
        student_feats: dict[str, Tensor],
        teacher: TeacherSignals,
        batch: dict[str, Tensor],
    ) -> StepLoss:
        # Word tasks refuse distill.matches (the student reads its own vocabulary): one stage, outputs only.
        if stage.matches:
            raise ValueError("word tasks distil outputs only; the stage must have no feature matches")
        if student_output is None:
            raise ValueError("the word objective needs the student's output")
        total, parts = self._logit_term(student_output, teacher, batch)
        parts["loss"] = total.detach()
        return StepLoss(total, parts)

    def _logit_term(
        self, output: Any, teacher: TeacherSignals, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        mask = batch["word_mask"].to(device=output.logits.device, dtype=torch.bool)
        self._check_student(output, mask)
        lam = self.lam
        parts: dict[str, Tensor] = {}
        total = torch.zeros((), device=output.logits.device)
        if lam < 1:
            gold = self.gold_loss(output, batch)
            total = total + (1 - lam) * gold
            parts["gold"] = gold.detach()
        if lam > 0:
            kd = self.kd_loss(output, teacher, mask)
            total = total + lam * kd
            parts["kd"] = kd.detach()
        return total, parts

    # ------------------------------------------------------------------------------------------------------------
    # gold

    def gold_loss(self, output: Any, batch: dict[str, Tensor]) -> Tensor:
        """The gold term alone (see the module docstring); a graph-keeping zero when no sentence is labelled."""
        mask = batch["word_mask"].to(device=output.logits.device, dtype=torch.bool)
        if self.task == "parsing":
            for key in ("heads", "deprels"):
                if key not in batch:
                    raise ValueError(f"gold {key!r} are needed when lambda < 1 (parsing)")
            heads = batch["heads"].to(output.logits.device)
            deprels = batch["deprels"].to(output.logits.device)
            return self._parser_gold(output, heads, deprels, mask)
        if self.field not in batch:
            raise ValueError(f"gold labels {self.field!r} are needed when lambda < 1")
        labels = batch[self.field].to(output.logits.device)
        if tuple(labels.shape) != tuple(mask.shape):
            raise ValueError(f"labels {self.field!r} {tuple(labels.shape)} must be [B, W] = {tuple(mask.shape)}")
        if _is_crf(output):
            return self._crf_gold(output, labels, mask)
        labelled = (labels != IGNORE_LABEL) & mask
        sentences = int(labelled.any(dim=1).sum())
        if sentences == 0:
            return _graph_zero(output)
        logits = output.logits[labelled].to(_compute_dtype(output.logits))
        return F.cross_entropy(logits, labels[labelled].long(), reduction="sum") / sentences

    def _crf_gold(self, output: Any, labels: Tensor, mask: Tensor) -> Tensor:
        labelled = (labels != IGNORE_LABEL) | ~mask
        full = mask.any(dim=1) & labelled.all(dim=1)
        if not bool(full.any()):
            return _graph_zero(output)
        pot = CRFPotentials(output.logits[full], output.transitions, output.start, output.end)
        logprob = crf_sequence_logprob(pot, labels[full].unsqueeze(1), mask[full])
        return -logprob.mean()

    def _parser_gold(self, output: Any, heads: Tensor, deprels: Tensor, mask: Tensor) -> Tensor:
        words = mask.shape[1]
        for name, t in (("heads", heads), ("deprels", deprels)):
            if tuple(t.shape) != tuple(mask.shape):
                raise ValueError(f"gold {name} {tuple(t.shape)} must be [B, W] = {tuple(mask.shape)}")
        labelled = (heads != IGNORE_LABEL) & mask
        sentences = int(labelled.any(dim=1).sum())
        if sentences == 0:
            return _graph_zero(output)
        lengths = mask.sum(dim=1)
        position = torch.arange(1, words + 1, device=mask.device).expand_as(heads)
        bad = labelled & ((heads < 0) | (heads > lengths[:, None]) | (heads == position))
        if bool(bad.any()):
            raise ValueError("gold heads must lie in 0..n (0 = ROOT) and differ from the word itself")
        dtype = _compute_dtype(output.logits, output.rel_logits)
        log_p, _ = _head_log_softmax(output.logits.to(dtype), mask, 1.0)
        safe = heads.clamp(min=0).long()
        picked = log_p[:, :, 1:].gather(1, safe.unsqueeze(1)).squeeze(1)  # [B, W]: log p(gold head | d)
        head_nll = -torch.where(labelled, picked, 0.0).sum()
        rel_labelled = labelled & (deprels != IGNORE_LABEL)
        rels = output.rel_logits[:, :, 1:, :]  # [B, W+1, W, R]: dependents 1..W
        index = safe[:, None, :, None].expand(-1, 1, -1, rels.shape[-1])
        at_gold = rels.gather(1, index).squeeze(1)  # [B, W, R]
        if bool(rel_labelled.any()):
            rel_nll = F.cross_entropy(at_gold[rel_labelled].to(dtype), deprels[rel_labelled].long(), reduction="sum")
        else:
            rel_nll = at_gold.sum() * 0.0
        return (head_nll + rel_nll) / sentences

    # ------------------------------------------------------------------------------------------------------------
    # knowledge distillation

    def kd_loss(self, output: Any, teacher: TeacherSignals, mask: Tensor) -> Tensor:
        """The KD term alone over every sentence with at least one word (see the module docstring)."""
        if teacher.logits is None:
            raise ValueError("the teacher's outputs are needed for the KD term (lambda > 0)")
        t_logits = teacher.logits.to(output.logits.device)
        rows = mask.any(dim=1)
        if not bool(rows.all()):  # sentences that lost every word to truncation take no part
            if not bool(rows.any()):
                return _graph_zero(output)
            output = _Rows(output, rows)
            t_logits, mask = t_logits[rows], mask[rows]
        if self.task == "parsing":
            return self._parser_kd(output, t_logits, mask)
        return self._tagger_kd(output, t_logits, teacher.extras, mask)

    def _teacher_potentials(self, emissions: Tensor, extras: dict[str, Tensor], mask: Tensor) -> CRFPotentials | None:
        tags = emissions.shape[2]
        if "transitions" not in extras:
            return None
        missing = [k for k in ("start", "end") if k not in extras]
        if missing:
            raise ValueError(f"a CRF teacher's extras need transitions, start and end; missing {missing}")
        trans, start, end = (extras[k].to(emissions.device) for k in ("transitions", "start", "end"))
        if tuple(trans.shape) != (tags, tags) or tuple(start.shape) != (tags,) or tuple(end.shape) != (tags,):
            raise ValueError(
                f"teacher CRF: transitions [Ct, Ct], start and end [Ct] with Ct = {tags}, got "
                f"{tuple(trans.shape)}, {tuple(start.shape)}, {tuple(end.shape)}"
            )
        return CRFPotentials(emissions, trans, start, end)

    def _tagger_kd(self, output: Any, t_emissions: Tensor, extras: dict[str, Tensor], mask: Tensor) -> Tensor:
        s_emissions = output.logits
        batch, words, s_tags = s_emissions.shape
        if t_emissions.ndim != 3 or tuple(t_emissions.shape[:2]) != (batch, words):
            raise ValueError(
                f"teacher emissions must be [B, W, Ct] with [B, W] = [{batch}, {words}], got {tuple(t_emissions.shape)}"
            )
        t_tags = t_emissions.shape[2]
        label_map = self.label_map
        if label_map is None and t_tags != s_tags:
            raise ValueError(
                f"teacher and student label counts differ ({t_tags} vs {s_tags}); give a label_map [Ct, Cs]"
            )
        if label_map is not None and tuple(label_map.shape) != (t_tags, s_tags):
            raise ValueError(f"label_map must be [Ct, Cs] = [{t_tags}, {s_tags}], got {tuple(label_map.shape)}")
        t_pot = self._teacher_potentials(t_emissions, extras, mask)
        s_pot = CRFPotentials(s_emissions, output.transitions, output.start, output.end) if _is_crf(output) else None
        dtype = _compute_dtype(s_emissions, t_emissions)
        if self.method == "token":
            probs = torch.softmax(t_emissions.detach().to(dtype) / self.temperature, dim=-1)
            if label_map is not None:
                probs, _ = map_labels(probs, None, label_map.to(probs.device))
            return token_kd(s_emissions, probs, mask, self.temperature)
        if self.method == "topk":
            return self._topk_kd(s_pot, s_emissions, t_pot, t_emissions, mask, dtype)
        return self._structural_kd(s_pot, s_emissions, t_pot, t_emissions, mask, dtype)

    def _topk_kd(
        self,
        s_pot: CRFPotentials | None,
        s_emissions: Tensor,
        t_pot: CRFPotentials | None,
        t_emissions: Tensor,
        mask: Tensor,
        dtype: torch.dtype,
    ) -> Tensor:
        assert self.kbest is not None
        if t_pot is None:  # a softmax teacher: a CRF without transitions has the same k best sequences
            t_tags = t_emissions.shape[2]
            zeros = t_emissions.new_zeros(t_tags)
            t_pot = CRFPotentials(t_emissions, t_emissions.new_zeros(t_tags, t_tags), zeros, zeros)
        with torch.no_grad():
            tags, scores = crf_kbest(*(p.detach() for p in t_pot), k=self.kbest, mask=mask)
            weights = kbest_weights(scores.to(dtype) / self.temperature)
            if self.label_map is not None:
                to_student = self.label_map.to(tags.device).argmax(dim=1)
                tags = torch.where(tags == PAD_TAG, PAD_TAG, to_student[tags.clamp(min=0)])
        if s_pot is not None:
            logprobs = crf_sequence_logprob(s_pot, tags, mask)
        else:
            logprobs = token_sequence_logprob(s_emissions, tags, mask)
        return sequence_kd(logprobs, weights)

    def _structural_kd(
        self,
        s_pot: CRFPotentials | None,
        s_emissions: Tensor,
        t_pot: CRFPotentials | None,
        t_emissions: Tensor,
        mask: Tensor,
        dtype: torch.dtype,
    ) -> Tensor:
        temp, label_map = self.temperature, self.label_map
        if label_map is not None:
            return self._mapped_kd(s_pot, s_emissions, t_pot, t_emissions, label_map, mask, dtype)
        if t_pot is not None:
            if s_pot is not None:
                return crf_kd(s_pot, t_pot, mask, temp)
            return crf_to_token_kd(s_emissions, t_pot, mask, temp)
        probs = torch.softmax(t_emissions.detach().to(dtype) / temp, dim=-1)
        if s_pot is not None:
            return token_to_crf_kd(s_pot, probs, mask, temp)
        return token_kd(s_emissions, probs, mask, temp)

    def _mapped_kd(
        self,
        s_pot: CRFPotentials | None,
        s_emissions: Tensor,
        t_pot: CRFPotentials | None,
        t_emissions: Tensor,
        label_map: Tensor,
        mask: Tensor,
        dtype: torch.dtype,
    ) -> Tensor:
        """Case 4: the teacher's tempered marginals mapped to the student's labels, then case 1 or 2."""
        temp = self.temperature
        with torch.no_grad():
            if t_pot is not None:
                node, edge = crf_marginals(*(p.detach().to(dtype) / temp for p in t_pot), mask=mask)
            else:
                node = torch.softmax(t_emissions.detach().to(dtype) / temp, dim=-1)
                node = torch.where(mask.unsqueeze(-1), node, 0.0)
                edge = node[:, :-1, :, None] * node[:, 1:, None, :]
            node_y, edge_y = map_labels(node, edge if s_pot is not None else None, label_map.to(node.device))
        if s_pot is None:
            return token_kd(s_emissions, node_y, mask, temp)
        assert edge_y is not None
        entropy = chain_entropy(node_y, edge_y, mask)
        return crf_kd_from_marginals(s_pot, node_y, edge_y, mask, temp, teacher_entropy=entropy)

    def _parser_kd(self, output: Any, t_arcs: Tensor, mask: Tensor) -> Tensor:
        s_arcs = output.logits
        if tuple(t_arcs.shape) != tuple(s_arcs.shape):
            raise ValueError(
                f"teacher arc scores {tuple(t_arcs.shape)} must match the student's {tuple(s_arcs.shape)} [B, W+1, W+1]"
            )
        temp = self.temperature
        lengths = mask.sum(dim=1)
        if self.method == "structural":
            return arc_kd(s_arcs, t_arcs, lengths, temp)
        # token: local head distributions of both sides
        dtype = _compute_dtype(s_arcs, t_arcs)
        log_q, valid = _head_log_softmax(s_arcs.to(dtype), mask, temp)
        with torch.no_grad():
            log_p, _ = _head_log_softmax(t_arcs.detach().to(dtype), mask, temp)
            p = torch.where(valid, log_p.exp(), 0.0)
        positive = p > 0
        terms = torch.where(positive, p * (torch.where(positive, log_p, 0.0) - torch.where(positive, log_q, 0.0)), 0.0)
        return terms.sum() * (temp**2 / max(s_arcs.shape[0], 1))

    # ------------------------------------------------------------------------------------------------------------

    def _check_student(self, output: Any, mask: Tensor) -> None:
        batch, words = mask.shape
        logits = output.logits
        if self.task == "parsing":
            shape = (batch, words + 1, words + 1)
            if tuple(logits.shape) != shape:
                raise ValueError(f"student arc logits must be [B, W+1, W+1] = {list(shape)}, got {tuple(logits.shape)}")
            rel = getattr(output, "rel_logits", None)
            if rel is None or rel.ndim != 4 or tuple(rel.shape[:3]) != shape:
                got = None if rel is None else tuple(rel.shape)
                raise ValueError(f"student rel_logits must be [B, W+1, W+1, R] with [B, W+1, W+1] = {shape}, got {got}")
            return
        if logits.ndim != 3 or tuple(logits.shape[:2]) != (batch, words):
            raise ValueError(
                f"student emissions must be [B, W, C] with [B, W] = [{batch}, {words}], got {tuple(logits.shape)}"
            )


# ----------------------------------------------------------------------------------------------------------------
# helpers


class _Rows:
    """A view of a model output restricted to some sentences (the per-batch tensors; CRF parameters are shared)."""

    def __init__(self, output: Any, rows: Tensor) -> None:
        self.logits = output.logits[rows]
        self.transitions = getattr(output, "transitions", None)
        self.start = getattr(output, "start", None)
        self.end = getattr(output, "end", None)
        rel = getattr(output, "rel_logits", None)
        self.rel_logits = rel[rows] if rel is not None else None


def _is_crf(output: Any) -> bool:
    return getattr(output, "transitions", None) is not None


def _graph_zero(output: Any) -> Tensor:
    """A zero that keeps every output of the student in the graph (DDP needs every parameter used)."""
    total = output.logits.sum() * 0.0
    for name in ("transitions", "start", "end", "rel_logits"):
        value = getattr(output, name, None)
        if value is not None:
            total = total + value.sum() * 0.0
    return total


def _head_log_softmax(arcs: Tensor, mask: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``log p(h | d) = log_softmax_h(arcs[h, d] / T)`` over heads ``h ∈ 0..n, h ≠ d``, and the valid-arc mask.

    ``arcs [B, W+1, W+1]`` ([b, head, dep], node 0 = ROOT), ``mask [B, W]`` real words. Invalid heads of a real
    dependent get ``-inf``; columns of ROOT and padded words hold 0 before the softmax (no ``nan``).
    """
    size = arcs.shape[1]
    pos = torch.arange(size, device=arcs.device)
    real = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # [B, W+1]: ROOT and the words
    dep = (real & (pos[None, :] >= 1))[:, None, :]
    valid = real[:, :, None] & dep & (pos[:, None] != pos[None, :])[None]
    logits = torch.where(valid, arcs / temperature, torch.where(dep, float("-inf"), 0.0))
    return F.log_softmax(logits, dim=1), valid


def _neg_entropy_terms(p: Tensor) -> Tensor:
    positive = p > 0
    return torch.where(positive, p * torch.log(torch.where(positive, p, 1.0)), 0.0)


def chain_entropy(node: Tensor, edge: Tensor, mask: Tensor) -> Tensor:
    """Entropy ``[B]`` of the first-order Markov chain with node marginals ``node [B, L, C]`` and edge marginals
    ``edge [B, L−1, C, C]``: ``H = Σ_{i<n} H(node_i) − Σ_{i<n−1} (H(node_i) + H(node_{i+1}) − H(edge_i))``.

    For marginals of a linear-chain CRF this is the CRF's entropy; for mapped marginals it is the entropy of the
    best CRF fit (the maximum-entropy chain with those marginals).
    """
    bmask = mask.to(dtype=torch.bool)
    node = torch.where(bmask.unsqueeze(-1), node, 0.0)
    edge = torch.where(bmask[:, 1:, None, None], edge, 0.0)
    h_node = -_neg_entropy_terms(node).sum(dim=2)  # [B, L]
    h_edge = -_neg_entropy_terms(edge).sum(dim=(2, 3))  # [B, L-1]
    real_edge = bmask[:, 1:]
    info = torch.where(real_edge, h_node[:, :-1] + h_node[:, 1:] - h_edge, 0.0)
    return h_node.sum(dim=1) - info.sum(dim=1)
