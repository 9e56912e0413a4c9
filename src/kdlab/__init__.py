"""kdlab: knowledge distillation on one engine.

The Python API mirrors the CLI: ``kdlab.finetune``, ``kdlab.cache``, ``kdlab.distill``, ``kdlab.evaluate``,
``kdlab.inspect``, ``kdlab.demo``, each taking a recipe (YAML path, dict or :class:`kdlab.config.Recipe`) and
``key=value`` overrides.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["cache", "demo", "distill", "evaluate", "finetune", "inspect", "recipe"]


def __getattr__(name: str) -> Any:
    # Importing kdlab stays cheap (no torch/transformers) until an operation is used.
    if name in __all__:
        from kdlab import api

        return getattr(api, name)
    raise AttributeError(name)
