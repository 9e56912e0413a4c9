"""Hidden-state knowledge selection ("Marginal Utility Diminishes", Liu et al., ACL 2021).

A teacher hidden state ``[B, L, D]`` holds far more knowledge than a small student can absorb, and most of it can be
dropped with little loss in accuracy, which makes caching the teacher's hidden states to disk affordable. The
selection compresses two axes:

* LENGTH (which tokens): all, [CLS] only, the first ``N``, or the ``N`` tokens the teacher's [CLS] attends to most
  (optionally never a [SEP]).
* WIDTH (which dimensions): a fraction ``p`` of ``D``, the same dims for every token (``uniform``: evenly spread;
  ``random``: a fixed seeded subset) or, per token, the ``k`` dims of largest teacher magnitude (``importance``).

:func:`select_teacher` makes a :class:`Selected` from a live teacher, :func:`to_examples` /
:func:`from_examples` move it through a per-example disk cache, and :func:`gather_student` picks the same
tokens/dims out of the student's hidden state, so the two can go straight into a feature loss with
``mask=selected.token_mask``. Both sides hold exactly 0 at masked slots (short examples have fewer than ``N``
selected tokens), so a masked entry never pulls the student towards 0 and gets no gradient.

Padding is assumed on the right (the HF default for encoders): the real tokens of an example come first.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kdlab.losses.logits import _compute_dtype

__all__ = [
    "Selected",
    "SelectionSpec",
    "cls_attention",
    "from_examples",
    "gather_student",
    "select_teacher",
    "to_examples",
    "width_dims",
]

_COUNTED_RULES = ("first", "attention", "attention_no_sep")
_WIDTH_MASKS = ("uniform", "random", "importance")
_COUNT = re.compile(r"[0-9]+")
# The largest teacher width whose dim indices fit the int16 a cache stores them in.
_INT16_WIDTH = 2**15


def _parse_tokens(tokens: object) -> tuple[str, int | None]:
    if isinstance(tokens, str):
        if tokens == "all":
            return "all", None
        if tokens == "cls":
            return "cls", 1
        rule, colon, count = tokens.partition(":")
        if rule in _COUNTED_RULES and colon and _COUNT.fullmatch(count) and int(count) >= 1:
            return rule, int(count)
    raise ValueError(
        "SelectionSpec.tokens must be 'all', 'cls', 'first:N', 'attention:N' or 'attention_no_sep:N' with an "
        f"integer N >= 1, got {tokens!r}"
    )


@dataclass(frozen=True)
class SelectionSpec:
    """Which teacher hidden-state knowledge is kept: tokens (LENGTH) and feature dimensions (WIDTH).

    Attributes:
        tokens: ``"all"``, ``"cls"`` (position 0), ``"first:N"`` (the first N positions), ``"attention:N"`` (the N
            real tokens with the largest [CLS] attention, see :func:`cls_attention`) or ``"attention_no_sep:N"``
            (the same, never choosing a [SEP]). Leading zeros in N are dropped (``"first:05"`` -> ``"first:5"``).
        width: fraction ``p ∈ (0, 1]`` of the ``D`` feature dims kept; ``k = max(1, round(p·D))`` (Python's
            ``round``, ties to even).
        width_mask: how the ``k`` dims are chosen when ``p < 1``: ``"uniform"`` (dims ``⌊i·D/k⌋``, i.e. every
            ``1/p``-th dim), ``"random"`` (a subset fixed by ``seed``) or ``"importance"`` (per token, the ``k``
            dims of largest ``|teacher value|``).
        seed: seed of the ``"random"`` mask (ignored otherwise); an integer ``>= 0``.

    Raises:
        ValueError: on any value outside the above.
    """

    tokens: str = "all"
    width: float = 1.0
    width_mask: str = "uniform"
    seed: int = 0

    def __post_init__(self) -> None:
        rule, count = _parse_tokens(self.tokens)
        # Canonical forms, so that equal selections compare equal and have one signature.
        object.__setattr__(self, "tokens", rule if rule in ("all", "cls") else f"{rule}:{count}")
        width = self.width
        if isinstance(width, bool) or not isinstance(width, numbers.Real) or not (0.0 < float(width) <= 1.0):
            raise ValueError(f"SelectionSpec.width must be a number in (0, 1] (fraction of dims kept), got {width!r}")
        object.__setattr__(self, "width", float(width))
        if self.width_mask not in _WIDTH_MASKS:
            raise ValueError(f"SelectionSpec.width_mask must be one of {list(_WIDTH_MASKS)}, got {self.width_mask!r}")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not (0 <= int(seed) < 2**63):
            raise ValueError(f"SelectionSpec.seed must be an integer in [0, 2**63), got {seed!r}")
        object.__setattr__(self, "seed", int(seed))

    @property
    def token_rule(self) -> str:
        """``"all"``, ``"cls"``, ``"first"``, ``"attention"`` or ``"attention_no_sep"``."""
        return _parse_tokens(self.tokens)[0]

    @property
    def token_count(self) -> int | None:
        """``N`` of a counted rule, 1 for ``"cls"``, ``None`` for ``"all"``."""
        return _parse_tokens(self.tokens)[1]

    @property
    def needs_attention(self) -> bool:
        """Whether :func:`select_teacher` needs the teacher's [CLS] attention scores."""
        return self.token_rule in ("attention", "attention_no_sep")

    @property
    def is_identity(self) -> bool:
        """Whether everything is kept (all tokens, all dims)."""
        return self.tokens == "all" and self.width == 1.0

    def signature(self) -> str:
        """Canonical string naming the selection, e.g. ``"tokens=attention_no_sep:10,width=importance:0.1"``.

        Stable across runs and Python versions (it keys disk caches); equal iff the selections are the same.
        The width part is left out when ``p == 1`` (the mask then does not matter), the seed is given only for
        random masks.
        """
        parts = [f"tokens={self.tokens}"]
        if self.width < 1.0:
            # repr of a float is its shortest round-tripping form: "0.1", never "0.1000000000000000055".
            parts.append(f"width={self.width_mask}:{self.width!r}")
            if self.width_mask == "random":
                parts.append(f"seed={self.seed}")
        return ",".join(parts)

    def kept_dims(self, width: int) -> int:
        """Number of dims kept out of ``width``: ``k = max(1, round(p · width))``."""
        if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
            raise ValueError(f"SelectionSpec.kept_dims: width must be an integer >= 1, got {width!r}")
        return max(1, min(int(width), round(self.width * int(width))))


@dataclass
class Selected:
    """Teacher knowledge for one batch after selection, and where it sits in the full ``[B, L, D]`` feature.

    Attributes:
        values: ``[B, n, k]`` selected hidden-state values; 0 at masked slots. For cached attention maps
            ``[B, H, L, L]`` (then ``positions`` and ``dims`` are ``None``).
        token_mask: ``[B, n]`` bool (``[B, L]`` for attention maps), True = a real selected token. The real
            slots of an example come first.
        positions: ``[B, n]`` long positions in the full sequence (0 at masked slots); ``None`` = all tokens
            in order (``n = L``).
        dims: ``None`` = all dims; ``[k]`` long = the same dims for every token (uniform/random); ``[B, n, k]``
            long = per-token dims (importance), ascending, 0 at masked slots.
        width: the full teacher width ``D`` when known (set by :func:`select_teacher`), so that
            :func:`gather_student` can reject a student of another width instead of silently reading the wrong
            dims; ``None`` = unknown.
    """

    values: Tensor
    token_mask: Tensor
    positions: Tensor | None = None
    dims: Tensor | None = None
    width: int | None = None


def width_dims(spec: SelectionSpec, width: int, device: torch.device | str | None = None) -> Tensor | None:
    """The ``k = spec.kept_dims(width)`` dims shared by every token: ``[k]`` long, ascending, distinct.

    ``uniform``: ``d_i = ⌊i · width / k⌋`` for ``i = 0..k−1`` (every ``1/p``-th dim, starting at 0);
    ``random``: the first ``k`` entries of ``randperm(width)`` under ``torch.Generator().manual_seed(seed)``,
    sorted (drawn on the CPU, so the same on every device).

    Returns ``None`` when ``p == 1`` (all dims) or for ``importance`` masks (dims differ per token).
    """
    if spec.width == 1.0 or spec.width_mask == "importance":
        return None
    k = spec.kept_dims(width)
    if spec.width_mask == "uniform":
        # Integer arithmetic: rounding a float linspace can map two neighbours to the same dim. Steps are
        # width/k >= 1, so the k dims are distinct.
        dims = torch.arange(k, dtype=torch.long) * width // k
    else:
        generator = torch.Generator().manual_seed(spec.seed)
        dims = torch.randperm(width, generator=generator)[:k].sort().values
    return dims.to(device)


def cls_attention(attention_probs: Tensor) -> Tensor:
    """How much [CLS] attends to each token: ``score[b, j] = (1/H) Σ_h A[b, h, 0, j]``.

    Args:
        attention_probs: ``[B, H, L, L]`` attention probabilities of one teacher layer (rows = queries).

    Returns:
        ``[B, L]`` in float32 (float64 for float64 input).
    """
    if attention_probs.ndim != 4 or attention_probs.shape[-1] != attention_probs.shape[-2]:
        raise ValueError(
            f"cls_attention: expected attention probabilities [B, H, L, L], got shape {tuple(attention_probs.shape)}"
        )
    return attention_probs[:, :, 0, :].to(_compute_dtype(attention_probs)).mean(dim=1)


def _check_token_tensor(name: str, tensor: Tensor, batch: int, length: int) -> None:
    if tuple(tensor.shape) != (batch, length):
        raise ValueError(f"select_teacher: {name} {tuple(tensor.shape)} must have shape [B, L] = [{batch}, {length}]")


def _top_attention_tokens(scores: Tensor, candidate: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Positions ``[B, n]`` of the ``n = min(count, L)`` candidates with the largest score, in sentence order, and
    their mask; slots beyond an example's number of candidates come last, at position 0."""
    length = scores.shape[1]
    n = min(count, length)
    scores = scores.to(_compute_dtype(scores))
    lowest = torch.finfo(scores.dtype).min
    # Candidates always rank above non-candidates (-inf), even with a -inf or nan score of their own.
    keyed = torch.where(candidate, scores.nan_to_num(nan=lowest, neginf=lowest), float("-inf"))
    # A stable sort breaks ties by position, so the choice is the same on every device.
    order = torch.sort(keyed, dim=1, descending=True, stable=True).indices[:, :n]
    chosen = candidate.gather(1, order)
    ordered = torch.where(chosen, order, length).sort(dim=1).values
    token_mask = ordered < length
    return torch.where(token_mask, ordered, 0), token_mask


def select_teacher(
    spec: SelectionSpec,
    hidden: Tensor,
    attention_mask: Tensor,
    cls_scores: Tensor | None = None,
    sep_mask: Tensor | None = None,
) -> Selected:
    """Select the teacher knowledge of one batch (tokens, then per-token or shared dims).

    Tokens: ``all`` keeps every position (``positions=None``, ``token_mask`` = the attention mask); ``cls`` and
    ``first:N`` keep positions ``0..min(N, L)−1`` (a slot is real iff its position is a real token);
    ``attention:N`` keeps the ``min(N, L)`` real tokens with the largest ``cls_scores`` (``attention_no_sep:N``
    also never a [SEP]), listed in sentence order; ties go to the earlier position. An example with fewer
    candidates than ``n`` has its real slots first and masked slots after them.

    Dims: ``uniform``/``random`` keep :func:`width_dims` for every token; ``importance`` keeps, per selected token,
    the ``k`` dims with the largest ``|value|`` (ties to the lower dim), ascending.

    Masked slots hold value 0, position 0 and dims 0, whatever the teacher holds there.

    Args:
        spec: the selection.
        hidden: teacher hidden states ``[B, L, D]``, any float dtype (kept).
        attention_mask: ``[B, L]``, nonzero = real token.
        cls_scores: ``[B, L]`` token scores, e.g. :func:`cls_attention` of a teacher layer; required for
            ``attention`` rules.
        sep_mask: ``[B, L]`` bool, True at [SEP] tokens; required for ``attention_no_sep``.

    Returns:
        A :class:`Selected` on ``hidden``'s device, ``values`` in ``hidden``'s dtype.
    """
    if hidden.ndim != 3:
        raise ValueError(f"select_teacher: hidden must be [B, L, D], got shape {tuple(hidden.shape)}")
    batch, length, width = hidden.shape
    _check_token_tensor("attention_mask", attention_mask, batch, length)
    real = attention_mask != 0
    rule, count = spec.token_rule, spec.token_count

    positions: Tensor | None = None
    if rule == "all":
        token_mask, values = real, hidden
    else:
        assert count is not None
        if rule in ("cls", "first"):
            n = min(count, length)
            positions = torch.arange(n, device=hidden.device).repeat(batch, 1)
            token_mask = real[:, :n]
        else:
            if cls_scores is None:
                raise ValueError(f"select_teacher: tokens={spec.tokens!r} needs cls_scores (see cls_attention)")
            _check_token_tensor("cls_scores", cls_scores, batch, length)
            candidate = real
            if rule == "attention_no_sep":
                if sep_mask is None:
                    raise ValueError(f"select_teacher: tokens={spec.tokens!r} needs sep_mask (True at [SEP] tokens)")
                _check_token_tensor("sep_mask", sep_mask, batch, length)
                candidate = candidate & ~sep_mask.bool()
            positions, token_mask = _top_attention_tokens(cls_scores, candidate, count)
        values = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, width))

    dims: Tensor | None = None
    if spec.width < 1.0:
        if spec.width_mask == "importance":
            k = spec.kept_dims(width)
            ranked = torch.sort(values.abs(), dim=-1, descending=True, stable=True).indices[..., :k]
            dims = ranked.sort(dim=-1).values
            values = values.gather(-1, dims)
            dims = torch.where(token_mask.unsqueeze(-1), dims, 0)
        else:
            dims = width_dims(spec, width, device=hidden.device)
            assert dims is not None
            values = values.index_select(-1, dims)

    # torch.where, not a multiplication: padding may hold inf/nan, and 0·nan = nan.
    values = torch.where(token_mask.unsqueeze(-1), values, 0)
    if positions is not None:
        positions = torch.where(token_mask, positions, 0)
    return Selected(values=values, token_mask=token_mask, positions=positions, dims=dims, width=width)


def gather_student(selected: Selected, student: Tensor, project: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The student's counterpart of ``selected.values``: same tokens, then ``project``, then same dims.

    ``out[b, i, j] = project(student[b, positions[b, i]])[dims[b, i, j]]`` (shared dims: ``dims[j]``), and 0 at
    masked slots, exactly like the teacher side. Only the selected tokens go through ``project``. Differentiable
    w.r.t. ``student`` and the parameters of ``project``; unselected positions and dims get gradient 0.

    For attention maps (4-D ``values``) the student's ``[B, H, L, L]`` maps are returned with entries whose query
    or key is not real set to 0.

    Args:
        selected: the teacher's selection (from :func:`select_teacher` or :func:`from_examples`).
        student: ``[B, L, Ds]`` hidden states (``[B, H, L, L]`` for attention maps).
        project: maps ``[..., Ds]`` to the teacher width ``[..., D]``; ``None`` when ``Ds == D``.

    Returns:
        Same shape as ``selected.values``, in the (projected) student's dtype.

    Raises:
        ValueError: if the shapes do not fit (e.g. a student of another width without ``project``).
    """
    values = selected.values
    if values.ndim == 4:
        if student.shape != values.shape:
            raise ValueError(
                f"gather_student: student attention maps {tuple(student.shape)} must have the teacher's shape "
                f"{tuple(values.shape)}"
            )
        real = selected.token_mask.bool()
        return torch.where(real[:, None, :, None] & real[:, None, None, :], student, 0)
    if student.ndim != 3 or student.shape[0] != values.shape[0]:
        raise ValueError(
            f"gather_student: student must be [B, L, Ds] with B = {values.shape[0]}, got {tuple(student.shape)}"
        )
    if selected.positions is None:
        if student.shape[1] != values.shape[1]:
            raise ValueError(
                f"gather_student: student length {student.shape[1]} differs from the teacher's {values.shape[1]}"
            )
        picked = student
    else:
        picked = student.gather(1, selected.positions.unsqueeze(-1).expand(-1, -1, student.shape[-1]))
    if project is not None:
        picked = project(picked)
    if selected.width is not None and picked.shape[-1] != selected.width:
        raise ValueError(
            f"gather_student: student width {picked.shape[-1]} differs from the teacher's {selected.width}; "
            "pass a projection"
        )
    dims = selected.dims
    if dims is not None:
        picked = picked.index_select(-1, dims) if dims.ndim == 1 else picked.gather(-1, dims)
    if picked.shape != values.shape:
        raise ValueError(
            f"gather_student: student selection {tuple(picked.shape)} does not match the teacher's "
            f"{tuple(values.shape)}; pass a projection if the widths differ"
        )
    return torch.where(selected.token_mask.unsqueeze(-1), picked, 0)


def _require_prefix(fn: str, token_mask: Tensor, counts: Tensor) -> None:
    """The cache stores only the first ``counts[b]`` slots, so those must be exactly the real ones."""
    expected = torch.arange(token_mask.shape[1]) < counts.unsqueeze(1)
    if not torch.equal(token_mask.bool(), expected):
        raise ValueError(
            f"{fn}: the real entries of every example must come first and match `lengths` (right padding); "
            "got a token_mask with gaps or a different count"
        )


def to_examples(selected: Selected, lengths: Tensor) -> list[dict[str, np.ndarray]]:
    """Split a batch into per-example arrays holding only real entries (what a disk cache stores).

    Per example ``b`` with ``n_b`` real slots (``lengths[b]`` for all-token signals and attention maps, the
    number of real selected tokens otherwise):

    * ``"values"``: ``[n_b, k]``, or ``[H, L_b, L_b]`` for attention maps; the values' dtype is kept, except
      bfloat16, which numpy lacks, becomes float32 (exactly).
    * ``"positions"``: ``[n_b]`` int32, when the tokens are a subset.
    * ``"dims"``: ``[n_b, k]`` int16 (int32 for teachers wider than 32768), for per-token (importance) dims.
      Shared dims are not stored: :func:`width_dims` rebuilds them.

    Args:
        selected: one batch.
        lengths: ``[B]`` number of real tokens per example (``attention_mask.sum(1)``).

    Raises:
        ValueError: if the real entries of an example are not its first slots (e.g. left padding).
    """
    values = selected.values.detach()
    batch = values.shape[0]
    lengths = torch.as_tensor(lengths).detach().cpu().long()
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"to_examples: lengths {tuple(lengths.shape)} must have shape [B] = [{batch}]")
    if values.dtype == torch.bfloat16:
        values = values.float()
    values = values.cpu()
    token_mask = selected.token_mask.detach().cpu()

    if values.ndim == 4:
        _require_prefix("to_examples", token_mask, lengths)
        return [{"values": values[b, :, :n, :n].numpy().copy()} for b, n in enumerate(lengths.tolist())]

    counts = lengths if selected.positions is None else token_mask.sum(dim=1)
    _require_prefix("to_examples", token_mask, counts)
    positions = None if selected.positions is None else selected.positions.detach().cpu().to(torch.int32)
    per_token_dims = None
    if selected.dims is not None and selected.dims.ndim == 3:
        per_token_dims = selected.dims.detach().cpu()
        if selected.width is not None:
            bound = selected.width
        else:
            bound = int(per_token_dims.max()) + 1 if per_token_dims.numel() else 1
        per_token_dims = per_token_dims.to(torch.int16 if bound <= _INT16_WIDTH else torch.int32)

    examples: list[dict[str, np.ndarray]] = []
    for b, n in enumerate(counts.tolist()):
        example = {"values": values[b, :n].numpy().copy()}
        if positions is not None:
            example["positions"] = positions[b, :n].numpy().copy()
        if per_token_dims is not None:
            example["dims"] = per_token_dims[b, :n].numpy().copy()
        examples.append(example)
    return examples


def _torch_dtype(array: np.ndarray | Tensor) -> torch.dtype:
    if isinstance(array, Tensor):
        return array.dtype
    return torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype


def _fill(dst: Tensor, src: np.ndarray | Tensor) -> None:
    """Copy into a CPU view; numpy sources are written through numpy (no warning for read-only or mmapped arrays)."""
    if isinstance(src, Tensor):
        dst.copy_(src)
    else:
        dst.numpy()[...] = src


def from_examples(
    examples: Sequence[dict[str, np.ndarray | Tensor]],
    seq_len: int,
    shared_dims: Tensor | None,
    device: torch.device | str | None = None,
) -> Selected:
    """Pad per-example arrays (from :func:`to_examples`) back into a batch; the exact inverse on real entries.

    All-token signals (no ``"positions"``) get ``n = seq_len`` slots, the collated batch length; token subsets
    get ``n = max_b n_b``; attention maps ``[H, L_b, L_b]`` become ``[B, H, seq_len, seq_len]``. The first ``n_b``
    slots of example ``b`` are real, the rest hold 0 (values, positions, dims).

    Args:
        examples: one dict per example, all with the same keys.
        seq_len: length ``L`` of the collated student batch (``>=`` every example's length).
        shared_dims: the ``[k]`` dims of a uniform/random width mask (see :func:`width_dims`), or ``None``.
        device: where the result goes.

    Returns:
        A :class:`Selected` with values in the stored dtype, long positions/dims, on ``device``.
    """
    if not examples:
        raise ValueError("from_examples: no examples")
    keys = set(examples[0])
    if "values" not in keys or any(set(ex) != keys for ex in examples):
        raise ValueError("from_examples: every example needs 'values' and the same keys as the others")
    batch = len(examples)
    first = examples[0]["values"]
    dtype = _torch_dtype(first)

    if first.ndim == 3:
        heads = first.shape[0]
        counts = [ex["values"].shape[-1] for ex in examples]
        for ex in examples:
            shape = tuple(ex["values"].shape)
            if len(shape) != 3 or shape[0] != heads or shape[1] != shape[2] or shape[1] > seq_len:
                raise ValueError(
                    f"from_examples: attention maps must be [H={heads}, L_b, L_b] with L_b <= {seq_len}, got {shape}"
                )
        maps = torch.zeros(batch, heads, seq_len, seq_len, dtype=dtype)
        for b, (ex, n) in enumerate(zip(examples, counts, strict=True)):
            _fill(maps[b, :, :n, :n], ex["values"])
        token_mask = torch.arange(seq_len) < torch.tensor(counts).unsqueeze(1)
        return Selected(values=maps.to(device), token_mask=token_mask.to(device))

    if first.ndim != 2:
        raise ValueError(f"from_examples: values must be [n_b, k] or [H, L_b, L_b], got shape {tuple(first.shape)}")
    k = first.shape[1]
    counts = [ex["values"].shape[0] for ex in examples]
    for ex in examples:
        n_b = ex["values"].shape[0]
        if ex["values"].ndim != 2 or ex["values"].shape[1] != k:
            raise ValueError(f"from_examples: values must all be [n_b, {k}], got {tuple(ex['values'].shape)}")
        if "positions" in keys and tuple(ex["positions"].shape) != (n_b,):
            raise ValueError(f"from_examples: positions {tuple(ex['positions'].shape)} must be [{n_b}]")
        if "dims" in keys and tuple(ex["dims"].shape) != (n_b, k):
            raise ValueError(f"from_examples: dims {tuple(ex['dims'].shape)} must be [{n_b}, {k}]")
    has_positions = "positions" in keys
    if has_positions:
        n = max(counts)
    else:
        if max(counts) > seq_len:
            raise ValueError(f"from_examples: an example has {max(counts)} tokens, more than seq_len={seq_len}")
        n = seq_len

    values = torch.zeros(batch, n, k, dtype=dtype)
    positions = torch.zeros(batch, n, dtype=torch.long) if has_positions else None
    per_token_dims = torch.zeros(batch, n, k, dtype=torch.long) if "dims" in keys else None
    for b, (ex, n_b) in enumerate(zip(examples, counts, strict=True)):
        _fill(values[b, :n_b], ex["values"])
        if positions is not None:
            _fill(positions[b, :n_b], ex["positions"])
        if per_token_dims is not None:
            _fill(per_token_dims[b, :n_b], ex["dims"])
    token_mask = torch.arange(n) < torch.tensor(counts).unsqueeze(1)

    dims: Tensor | None = per_token_dims
    if shared_dims is not None:
        if per_token_dims is not None:
            raise ValueError("from_examples: got both per-example dims and shared_dims")
        if tuple(shared_dims.shape) != (k,):
            raise ValueError(f"from_examples: shared_dims {tuple(shared_dims.shape)} must be [k] = [{k}]")
        dims = shared_dims.long()
    return Selected(
        values=values.to(device),
        token_mask=token_mask.to(device),
        positions=None if positions is None else positions.to(device),
        dims=None if dims is None else dims.to(device),
    )
