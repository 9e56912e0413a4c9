"""Layer-dropping students: a copy of the teacher with fewer transformer layers (DistilBERT-style init).

``shrink(teacher, keep_layers)`` builds a model of the teacher's own class and config with
``num_hidden_layers = len(keep_layers)``. When the width is unchanged every weight is copied: embeddings, the
kept layers in order (student layer ``i`` <- teacher layer ``keep_layers[i]``), pooler and classifier.
DistilBERT showed that starting from the teacher's own layers converges much faster than a random start.

The layer stack is found generically, as the ``nn.ModuleList`` whose length equals
``config.num_hidden_layers``, so this works for BERT-like Hugging Face encoders in general, not only BERT.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from kdlab.config import StudentConfig
from kdlab.errors import UserError

log = logging.getLogger(__name__)

_PATTERN = re.compile(r"^(bottom|top|uniform):(\d+)$")


def parse_keep_layers(spec: Sequence[int] | str, num_teacher_layers: int, key: str = "student.layers") -> list[int]:
    """Turn a layer selection into 0-based teacher layer indices, student order.

    Strings: ``"every_other"`` (layers 1, 3, 5, ... ending at the top one; for an odd layer count 0, 2, 4,
    ...), ``"bottom:N"``, ``"top:N"``, ``"uniform:N"`` (N layers spread evenly, the last being the top layer),
    ``"all"``, or a comma list ``"0,2,4"``. Lists of ints are checked for range and duplicates.
    """
    n = num_teacher_layers
    if isinstance(spec, str):
        text = spec.strip().lower().replace(" ", "")
        if text == "every_other":
            # Start at 1 for an even count (0 for odd): the top layer, next to the classifier, is always kept.
            layers = list(range((n - 1) % 2, n, 2))
        elif text == "all":
            layers = list(range(n))
        elif match := _PATTERN.match(text):
            how, count = match.group(1), int(match.group(2))
            if not 1 <= count <= n:
                raise UserError(
                    f"{spec!r} asks for {count} layers but the teacher has {n}",
                    key=key,
                    fix=f"use a count between 1 and {n}",
                )
            if how == "bottom":
                layers = list(range(count))
            elif how == "top":
                layers = list(range(n - count, n))
            else:
                # floor(i * n / count) - 1, i = 1..count: strictly increasing (n >= count), ends at n - 1.
                layers = [(i * n) // count - 1 for i in range(1, count + 1)]
        elif re.fullmatch(r"-?\d+(,-?\d+)*", text):
            layers = [int(part) for part in text.split(",")]
        else:
            raise UserError(
                f"unknown layer selection {spec!r}",
                key=key,
                fix='use a list of teacher layer indices, "every_other", "bottom:N", "top:N" or "uniform:N"',
            )
    else:
        try:
            layers = [int(i) for i in spec]
        except (TypeError, ValueError):
            raise UserError(
                f"layer selection {spec!r} is not a list of integers",
                key=key,
                fix="e.g. [1, 3, 5] or 'every_other'",
            ) from None

    if not layers:
        raise UserError("the student would have no layers", key=key, fix="keep at least one teacher layer")
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise UserError(
            f"teacher layers {bad} do not exist: the teacher has {n} layers, numbered 0..{n - 1}",
            key=key,
            fix=f"use indices between 0 and {n - 1}",
        )
    dupes = sorted({i for i in layers if layers.count(i) > 1})
    if dupes:
        raise UserError(
            f"teacher layers {dupes} are listed more than once",
            key=key,
            fix="list each teacher layer at most once",
        )
    return layers


def find_layer_lists(model: nn.Module) -> list[str]:
    """Paths of the ``nn.ModuleList`` s holding one entry per transformer layer.

    A candidate has ``config.num_hidden_layers`` entries; lists nested inside another candidate (e.g.
    per-layer sub-lists that happen to have the same length) are not layer stacks themselves and are skipped.
    """
    n = model.config.num_hidden_layers
    found: list[str] = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) != n:
            continue
        if any(path.startswith(f"{outer}.") for outer in found):
            continue
        found.append(path)
    return found


def layer_list_path(model: nn.Module) -> str:
    """Path of the main layer stack (e.g. ``bert.encoder.layer``); the largest one if there are several."""
    paths = find_layer_lists(model)
    if not paths:
        raise UserError(
            f"cannot find the layer stack of {type(model).__name__}: no nn.ModuleList has "
            f"num_hidden_layers={model.config.num_hidden_layers} entries",
            key="teacher.model",
            fix="use a BERT-like Hugging Face encoder as teacher, or a BiLSTM student",
        )
    return max(paths, key=lambda p: sum(p_.numel() for p_ in model.get_submodule(p).parameters()))


def shrink(
    teacher: Any,
    keep_layers: Sequence[int] | str,
    hidden_size: int | None = None,
    num_attention_heads: int | None = None,
    intermediate_size: int | None = None,
    key_prefix: str = "student",
    weights: Mapping[str, Tensor] | None = None,
) -> Any:
    """Build a student of the teacher's class and config keeping only ``keep_layers``.

    ``weights``: read the teacher's tensors from here (by state-dict name) instead of ``teacher.state_dict()``;
    with a meta-device teacher skeleton this builds the student without the teacher ever being loaded.

    Same width (hidden size, heads, intermediate size all unchanged): ALL weights are copied from the teacher,
    so keeping every layer reproduces the teacher exactly. Different width: the student is randomly
    initialised; there is no faithful way to copy a 768-wide matrix into a 384-wide one (slicing or averaging
    gives a network that computes nothing like the teacher), so the student learns from scratch through
    distillation. A changed head count or intermediate size counts as a width change for the same reason.

    The student lives on the teacher's device and dtype, in the teacher's train/eval mode. It holds no
    training-only modules (projections for feature losses live in ``kdlab.distill``).
    """
    tconf = teacher.config
    n_teacher = tconf.num_hidden_layers
    layers = parse_keep_layers(keep_layers, n_teacher, key=f"{key_prefix}.layers")
    layer_lists = find_layer_lists(teacher)
    if not layer_lists:
        layer_list_path(teacher)  # raises the UserError that explains it

    config = copy.deepcopy(tconf)
    config.num_hidden_layers = len(layers)
    # Per-layer config lists (e.g. layer_types) must follow the kept layers.
    for name, value in list(vars(config).items()):
        if "layer" in name and isinstance(value, (list, tuple)) and len(value) == n_teacher and n_teacher > 1:
            setattr(config, name, type(value)(value[i] for i in layers))

    width_changed = _set_width(config, hidden_size, num_attention_heads, intermediate_size, key_prefix)
    student = type(teacher)(config)
    param = next(teacher.parameters(), None)
    if param is not None and param.device.type != "meta":
        student.to(device=param.device, dtype=param.dtype)

    if width_changed:
        log.info("student width differs from the teacher's: randomly initialised, %d layers", len(layers))
    else:
        _copy_weights(teacher.state_dict() if weights is None else weights, student, layer_lists, layers)
    student.train(teacher.training)
    return student


def shrink_as_configured(
    teacher: Any, cfg: StudentConfig, attention: bool, weights: Mapping[str, Tensor] | None = None
) -> Any:
    """:func:`shrink` with the recipe's ``student`` section; eager attention only when attention is distilled."""
    student = shrink(
        teacher,
        cfg.layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        weights=weights,
    )
    student.config._attn_implementation = "eager" if attention else "sdpa"
    return student


def _set_width(
    config: Any,
    hidden_size: int | None,
    num_attention_heads: int | None,
    intermediate_size: int | None,
    key_prefix: str,
) -> bool:
    """Apply width overrides to ``config``; return whether anything differs from the teacher."""
    t_hidden = config.hidden_size
    t_heads = getattr(config, "num_attention_heads", None)
    t_inter = getattr(config, "intermediate_size", None)
    hidden = t_hidden if hidden_size is None else int(hidden_size)
    if hidden < 1:
        raise UserError(f"hidden size {hidden} is not positive", key=f"{key_prefix}.hidden_size", fix="e.g. 256")

    heads = num_attention_heads
    if heads is None:
        heads = t_heads
    if heads is not None:
        if heads < 1 or hidden % heads:
            raise UserError(
                f"hidden size {hidden} cannot be split into {heads} attention heads",
                key=f"{key_prefix}.num_attention_heads"
                if num_attention_heads is not None
                else f"{key_prefix}.hidden_size",
                fix="choose a hidden size that is a multiple of the head count, "
                f"or set {key_prefix}.num_attention_heads to a divisor of it",
            )
        config.num_attention_heads = heads

    inter = intermediate_size
    if inter is None and t_inter is not None:
        # Keep the teacher's feed-forward expansion ratio (4x for BERT) when only the hidden size changes.
        inter = round(t_inter * hidden / t_hidden)
    if inter is not None:
        if inter < 1:
            raise UserError(
                f"intermediate size {inter} is not positive",
                key=f"{key_prefix}.intermediate_size",
                fix="e.g. 1024",
            )
        config.intermediate_size = inter
    config.hidden_size = hidden
    return (hidden, heads, inter) != (t_hidden, t_heads, t_inter)


# A base checkpoint (no classifier saved) leaves these to their fresh initialisation, as load_classifier does.
_HEAD_PREFIXES = ("classifier", "score", "pre_classifier")


def _copy_weights(t_state: Mapping[str, Tensor], student: nn.Module, layer_lists: list[str], layers: list[int]) -> None:
    """Copy the teacher's whole state dict, re-indexing layer stacks: student i <- teacher layers[i]."""
    for path in layer_lists:
        got = len(student.get_submodule(path))
        if got != len(layers):
            raise RuntimeError(f"student {path} has {got} layers after shrinking, expected {len(layers)}")
    mapped = {}
    for name in student.state_dict():
        source = name
        for path in layer_lists:
            prefix = f"{path}."
            if name.startswith(prefix):
                index, rest = name[len(prefix) :].split(".", 1)
                source = f"{prefix}{layers[int(index)]}.{rest}"
                break
        if source in t_state:
            mapped[name] = t_state[source]
        elif not name.startswith(_HEAD_PREFIXES):
            raise KeyError(f"the teacher's weights have no {source!r} for the student's {name!r}")
    student.load_state_dict(mapped, strict=False)
