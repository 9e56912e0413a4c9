"""Metrics as JSON lines (one record per log event), optionally mirrored to TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLogger:
    def __init__(self, path: Path, tensorboard_dir: Path | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = path
        self._writer = None
        if enabled and tensorboard_dir is not None:
            from torch.utils.tensorboard import (
                SummaryWriter,
            )  # optional dependency, imported only when asked for

            self._writer = SummaryWriter(str(tensorboard_dir))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self._writer is not None:
            step = record.get("step", 0)
            prefix = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    self._writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
