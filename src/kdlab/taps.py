"""Forward hooks by module path: read intermediate features out of any ``nn.Module``.

``FeatureTaps(model, {"t3": TapSpec("bert.encoder.layer.3")})(**batch)`` runs the model once and returns
``({"t3": hidden_states}, output)``. Hooks exist only while the call runs, so a model is never left with stray
hooks (which would keep tensors alive and slow every later forward).

With ``stop_early=True`` the forward is aborted as soon as every tapped module has produced its output, by
raising an internal exception from that hook; this is how the teacher skips layers no match needs (e.g. the
top layers and the classifier when only layer 3 is distilled).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from kdlab.errors import UserError

TapKind = Literal["hidden", "attention"]
_KINDS = ("hidden", "attention")


@dataclass(frozen=True)
class TapSpec:
    """What to read from a module.

    ``path`` is a module path as printed by ``kdlab inspect`` (``model.get_submodule(path)``; "" is the model
    itself). ``kind="hidden"``: the module's output if it is a tensor, else its first element (tuple /
    ModelOutput). ``kind="attention"``: element 1 of the output, the attention probabilities ``[B, H, L, L]``
    of a HF self-attention module; only computed with eager attention.
    """

    path: str
    kind: TapKind = "hidden"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise UserError(f"unknown tap kind {self.kind!r} for {self.path!r}", fix="use 'hidden' or 'attention'")


def needs_attention(taps: Mapping[str, TapSpec] | Iterable[TapSpec]) -> bool:
    """Whether any tap reads attention probabilities (the model must then use eager attention)."""
    specs = taps.values() if isinstance(taps, Mapping) else taps
    return any(spec.kind == "attention" for spec in specs)


class _StopForward(Exception):
    """Raised from a hook to abort the forward once every tap has its feature. Never escapes FeatureTaps."""


class FeatureTaps:
    """Collect named features from ``model`` during a forward pass.

    ``taps`` maps a feature name to a :class:`TapSpec`; errors name the config key ``f"{key_prefix}.{name}"``
    (or ``f"{key_prefix}{name}"`` when the name starts with "["), so pass e.g.
    ``key_prefix="distill.matches"`` and names like ``"[0].student"``.

    ``stop_early`` (alias ``stop_after_deepest``): stop the forward right after the deepest tapped module,
    i.e. the last one in ``named_modules()`` order, or its outermost tapped ancestor, which finishes after it.
    In practice the hook that completes the set of features raises, which is the same module whenever modules
    run in registration order (true for HF encoders) and stays correct if they do not. The call then returns
    output ``None``.
    """

    def __init__(
        self,
        model: nn.Module,
        taps: Mapping[str, TapSpec],
        stop_early: bool = False,
        key_prefix: str = "",
        *,
        stop_after_deepest: bool | None = None,
    ) -> None:
        self.model = model
        self.taps = dict(taps)
        self.stop_early = bool(stop_early if stop_after_deepest is None else stop_after_deepest)
        self.key_prefix = key_prefix
        if not self.taps and self.stop_early:
            raise ValueError("stopping early needs at least one tap to stop after")

        order = {path: i for i, (path, _) in enumerate(model.named_modules())}
        self._modules: dict[str, nn.Module] = {}
        names_by_path: dict[str, list[str]] = {}
        for name, spec in self.taps.items():
            if spec.path not in self._modules:
                self._modules[spec.path] = self._lookup(name, spec.path)
            names_by_path.setdefault(spec.path, []).append(name)
        # Hooks are registered in execution-ish order only for readability; correctness does not depend on it.
        self._names_by_path = dict(sorted(names_by_path.items(), key=lambda item: order.get(item[0], -1)))
        self.stop_path = self._deepest_path(order)
        self._check_attention_implementation()

    # -- validation ------------------------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """The config key blamed for tap ``name``."""
        if not self.key_prefix:
            return name
        return f"{self.key_prefix}{name}" if name.startswith("[") else f"{self.key_prefix}.{name}"

    def _lookup(self, name: str, path: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            pass
        paths = [p for p, _ in self.model.named_modules() if p]
        # A forgotten prefix ("encoder.layer.3" for "bert.encoder.layer.3") is the commonest slip: first.
        suffix = [p for p in paths if p.endswith(f".{path}")]
        close = difflib.get_close_matches(path, paths, n=5, cutoff=0.5)
        suggestions = list(dict.fromkeys(suffix + close))[:5]
        hint = f"; did you mean: {', '.join(suggestions)}" if suggestions else ""
        name_or_path = getattr(getattr(self.model, "config", None), "name_or_path", "") or "MODEL"
        raise UserError(
            f"no module {path!r} in {type(self.model).__name__}{hint}",
            key=self.key(name),
            fix=f"run `kdlab inspect {name_or_path}` to list the module paths",
        )

    def _deepest_path(self, order: dict[str, int]) -> str:
        """The tapped module that finishes last when modules run in registration order."""
        paths = sorted(self._names_by_path, key=lambda p: order.get(p, -1))
        if not paths:
            return ""
        last = paths[-1]
        # A tapped ancestor of the last module finishes after it; the outermost one finishes last of all.
        ancestors = [p for p in paths if p == "" or last.startswith(f"{p}.")]
        return ancestors[0] if ancestors else last

    def _check_attention_implementation(self) -> None:
        attention = [name for name, spec in self.taps.items() if spec.kind == "attention"]
        impl = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        if attention and impl is not None and impl != "eager":
            raise UserError(
                "attention taps need attention probabilities, "
                f"but the model runs attn_implementation={impl!r}, which never computes them",
                key=self.key(attention[0]),
                fix="load the model with attn_implementation='eager' (or call model.set_attn_implementation('eager'))",
            )

    # -- running ---------------------------------------------------------------------------------------------

    def _extract(self, name: str, output: Any) -> torch.Tensor:
        spec = self.taps[name]
        if spec.kind == "hidden":
            value = output
            if isinstance(value, Mapping):  # ModelOutput / dict: its first field
                value = next(iter(value.values()), None)
            elif isinstance(value, (tuple, list)) and not isinstance(value, nn.utils.rnn.PackedSequence):
                value = value[0] if value else None
            if not isinstance(value, torch.Tensor):
                raise UserError(
                    f"module {spec.path!r} returns {type(value).__name__}, not a tensor",
                    key=self.key(name),
                    fix="tap a module whose output is a tensor of hidden states (see `kdlab inspect`)",
                )
            return value
        value = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
        if value is None:
            raise UserError(
                f"module {spec.path!r} returned no attention probabilities "
                "(element 1 of its output is missing or None)",
                key=self.key(name),
                fix="load the model with attn_implementation='eager' (sdpa/flash attention never compute "
                "them) and tap a self-attention module, e.g. bert.encoder.layer.0.attention.self",
            )
        if not isinstance(value, torch.Tensor) or value.dim() != 4:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UserError(
                f"element 1 of {spec.path!r}'s output is {got}, not attention probabilities [B, H, L, L]",
                key=self.key(name),
                fix="tap a self-attention module, e.g. bert.encoder.layer.0.attention.self",
            )
        return value

    def __call__(self, **inputs: Any) -> tuple[dict[str, torch.Tensor], Any | None]:
        """Run ``model(**inputs)``; return ``(features, output)``, output ``None`` when stopped early."""
        features: dict[str, torch.Tensor] = {}
        total = len(self.taps)
        if not total:  # nothing to capture: a plain forward
            return features, self.model(**inputs)

        def make_hook(names: list[str]) -> Any:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                for name in names:
                    features[name] = self._extract(name, output)
                if self.stop_early and len(features) == total:
                    raise _StopForward

            return hook

        handles = []
        output: Any | None = None
        try:
            for path, names in self._names_by_path.items():
                handles.append(self._modules[path].register_forward_hook(make_hook(names)))
            try:
                output = self.model(**inputs)
            except _StopForward:
                output = None
        finally:
            for handle in handles:
                handle.remove()

        missing = [name for name in self.taps if name not in features]
        if missing:
            spec = self.taps[missing[0]]
            raise UserError(
                f"module {spec.path!r} never ran during the forward pass, so it has no output to distil",
                key=self.key(missing[0]),
                fix="tap a module that the model's forward actually uses (see `kdlab inspect`)",
            )
        return features, output

    def close(self) -> None:
        """Nothing to release (hooks only exist during a call); kept for symmetry with the context manager."""

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
