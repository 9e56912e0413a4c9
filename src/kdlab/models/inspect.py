"""Module tables for ``kdlab inspect``: every module path with its class, parameters and output shapes.

The paths printed here are exactly what ``distill.matches[*].student/teacher`` take, and the output shapes
come from a real forward pass on a sample batch, so users can see which modules produce [B, L, D] hidden
states and which produce attention probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from rich.table import Table
from torch import nn

_MAX_SHAPES = 6  # a module returning many tensors (e.g. all hidden states) would flood the table


@dataclass(frozen=True)
class ModuleRow:
    """One module of a model. ``path`` is "" for the model itself."""

    path: str
    class_name: str
    own_params: int
    total_params: int
    output_shapes: tuple[tuple[int, ...], ...]
    calls: int = 0

    @property
    def depth(self) -> int:
        """0 for the model itself, 1 for its children, ..."""
        return 0 if not self.path else self.path.count(".") + 1


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared/tied tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _shapes(output: Any) -> list[tuple[int, ...]]:
    """Shapes of the tensors in a module output (tensor, tuple/list, dict/ModelOutput, PackedSequence)."""
    if isinstance(output, torch.Tensor):
        return [tuple(output.shape)]
    if isinstance(output, nn.utils.rnn.PackedSequence):
        return [tuple(output.data.shape)]
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [shape for item in output for shape in _shapes(item)]
    return []


def describe(model: nn.Module, sample_inputs: Mapping[str, Any] | Any) -> list[ModuleRow]:
    """Run one forward on ``sample_inputs`` and describe every module, in ``named_modules()`` order.

    ``sample_inputs`` is a batch dict (``model(**batch)``) or a single tensor (``model(x)``). The model runs
    in eval mode without gradients; its mode is restored and all hooks are removed afterwards.
    """
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    calls: dict[str, int] = {}

    def make_hook(path: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            calls[path] = calls.get(path, 0) + 1
            if path not in shapes:  # the first call is representative (shared modules run several times)
                shapes[path] = tuple(_shapes(output)[:_MAX_SHAPES])

        return hook

    modules = list(model.named_modules())
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    handles = [module.register_forward_hook(make_hook(path)) for path, module in modules]
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(sample_inputs, Mapping):
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in sample_inputs.items()}
                model(**batch)
            else:
                model(sample_inputs.to(device) if isinstance(sample_inputs, torch.Tensor) else sample_inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    return [
        ModuleRow(
            path=path,
            class_name=type(module).__name__,
            own_params=sum(p.numel() for p in module.parameters(recurse=False)),
            total_params=parameter_count(module),
            output_shapes=shapes.get(path, ()),
            calls=calls.get(path, 0),
        )
        for path, module in modules
    ]


def _format_shapes(row: ModuleRow) -> str:
    if not row.calls:
        # Containers (ModuleList/ModuleDict) are never called themselves; their entries are.
        container = row.class_name in ("ModuleList", "ModuleDict", "ParameterList", "ParameterDict")
        return "" if container else "[dim](not called)[/dim]"
    text = ", ".join("[" + ", ".join(map(str, shape)) + "]" for shape in row.output_shapes) or "-"
    return f"{text} x{row.calls}" if row.calls > 1 else text


def render_table(rows: list[ModuleRow], max_depth: int | None = None, title: str | None = None) -> Table:
    """A rich table of ``rows``; ``max_depth`` hides modules nested deeper (0 = the model only)."""
    table = Table(title=title, show_lines=False)
    table.add_column("path", no_wrap=True)  # paths are copied into recipes: never break them
    table.add_column("class", overflow="ellipsis")
    table.add_column("params (own)", justify="right")
    table.add_column("params (total)", justify="right")
    table.add_column("output shape(s)", overflow="fold")
    for row in rows:
        if max_depth is not None and row.depth > max_depth:
            continue
        table.add_row(
            row.path or "[bold](model)[/bold]",
            row.class_name,
            f"{row.own_params:,}" if row.own_params else "",
            f"{row.total_params:,}",
            _format_shapes(row),
        )
    return table
