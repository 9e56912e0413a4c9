"""Training from a cache: the recipe is checked against the cache before anything trains, then the knowledge is
read per batch from the memory-mapped shards, by example identity (content hash), in the shape a live teacher
would give it (:class:`~kdlab.engine.teacher.TeacherSignals`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdlab.config import Recipe
from kdlab.engine.teacher import Autocast, TeacherSignals
from kdlab.errors import UserError
from kdlab.knowledge.recipe import fingerprint, recipe_signals
from kdlab.knowledge.signals import Signal
from kdlab.knowledge.store import CacheStore
from kdlab.knowledge.write import item_key
from kdlab.methods.matches import FeatureMatcher, tap_name
from kdlab.methods.objective import Objective
from kdlab.methods.selection import from_examples
from kdlab.methods.stages import Stage

_REBUILD = "re-run `kdlab cache` with this recipe (add --overwrite to replace the old cache)"


class CachedTeacher:
    """Teacher knowledge read from a cache; the teacher model itself is never built."""

    def __init__(
        self,
        store: CacheStore,
        objective: Objective,
        signals: Sequence[Signal],
        locations: dict[str, np.ndarray],
    ) -> None:
        self.store = store
        self.objective = objective
        self.locations = locations
        described = store.manifest["signals"]
        self.logits = next((s for s in signals if s.match is None), None)
        self.by_match = {s.match: s for s in signals if s.match is not None}
        self.entries = {s.signature: described[s.signature] for s in signals}
        # Per stored signal, fixed for the whole run: which fields it has, and its shared width mask.
        self.fields = {sig: self._fields_of(entry["name"]) for sig, entry in self.entries.items()}
        self.shared_dims = {sig: _dims_tensor(entry.get("shared_dims")) for sig, entry in self.entries.items()}
        self.device = torch.device("cpu")

    def bind(self, split: str, items: list[dict[str, Any]]) -> None:
        """Locate ``items`` in the cache (UserError when any is missing); steps of ``split`` then read them."""
        self.locations[split] = _locate(self.store, split, items)

    def scores(self, items: list[dict[str, Any]], regression: bool) -> np.ndarray:
        """The teacher's score per item (regression value, or predicted class), e.g. to filter augmented data."""
        if self.logits is None:
            raise UserError(
                "the cache holds no teacher outputs, but augment.filter needs them",
                key="augment.filter",
                fix="set distill.alpha above 0 (so outputs are cached) and re-run `kdlab cache`, or filter: none",
            )
        where = _locate(self.store, "augmented", items)
        name = self.entries[self.logits.signature]["name"]
        if self.logits.kind == "topk":  # the most likely class comes first
            return torch.stack(self.store.read(where, f"{name}.indices"))[:, 0].long().numpy()
        logits = torch.stack(self.store.read(where, f"{name}.values")).float()
        return logits.reshape(-1).numpy() if regression else logits.argmax(-1).numpy()

    def _fields_of(self, name: str) -> list[str]:
        return [f for f in ("values", "positions", "dims") if f"{name}.{f}" in self.store.fields]

    def prepare(self, device: torch.device, autocast: Autocast) -> None:
        self.device = device

    def signals(self, stage: Stage, batch: dict[str, Tensor], indices: Sequence[int], split: str) -> TeacherSignals:
        where = self.locations[split][np.asarray(indices, dtype=np.int64)]
        out = TeacherSignals()
        if self.logits is not None and self.objective.needs_teacher_logits(stage):
            name = self.entries[self.logits.signature]["name"]
            if self.logits.kind == "topk":
                logprobs = self._stack(where, f"{name}.logprobs").float()
                out.topk = (logprobs, self._stack(where, f"{name}.indices").long())
            else:
                out.logits = self._stack(where, f"{name}.values").float()
        for i in stage.matches:
            signature = self.by_match[i].signature
            out.feats[tap_name(i)] = self._selected(where, signature, seq_len=batch["input_ids"].shape[1])
        return out

    def _stack(self, where: np.ndarray, field: str) -> Tensor:
        return torch.stack(self.store.read(where, field)).to(self.device)

    def _selected(self, where: np.ndarray, signature: str, seq_len: int) -> Any:
        name, fields = self.entries[signature]["name"], self.fields[signature]
        columns = {f: self.store.read(where, f"{name}.{f}") for f in fields}
        examples = [{f: columns[f][j] for f in fields} for j in range(len(where))]
        return from_examples(examples, seq_len, self.shared_dims[signature], self.device)


def _dims_tensor(dims: list[int] | None) -> Tensor | None:
    return torch.tensor(dims, dtype=torch.long) if dims is not None else None


def open_cache(
    recipe: Recipe,
    matcher: FeatureMatcher,
    objective: Objective,
    tokenizer: Any,
    splits: dict[str, list[dict[str, Any]]],
    teacher_path: str | None,
) -> tuple[CachedTeacher, dict[str, int]]:
    """Open ``cache.dir`` for this recipe; every mismatch is a UserError before training. Returns the source and
    each match's teacher width (for the projections)."""
    store = CacheStore.open(Path(recipe.cache.dir or ""), key="cache.dir")
    _check_fingerprint(store.manifest, fingerprint(recipe, tokenizer, teacher_path))
    signals = recipe_signals(recipe, matcher, objective)
    described = store.manifest["signals"]
    missing = [s.signature for s in signals if s.signature not in described]
    if missing:
        raise UserError(
            f"the cache in {recipe.cache.dir} lacks knowledge this recipe needs: {'; '.join(missing)} "
            f"(it holds: {'; '.join(described) or 'nothing'})",
            key="cache.dir",
            fix=_REBUILD,
        )
    if recipe.cache.verify:
        store.verify()
    source = CachedTeacher(store, objective, signals, {})
    for split, items in splits.items():
        source.bind(split, items)
    widths = {tap_name(s.match): int(described[s.signature]["width"]) for s in signals if s.match is not None}
    return source, widths


def _check_fingerprint(manifest: dict[str, Any], expected: dict[str, Any]) -> None:
    cached = manifest.get("fingerprint", {})
    what = {
        "teacher": "the teacher's weights differ from those the cache was made with",
        "tokenizer": "the tokenizer differs from the one the cache was made with",
        "max_length": "task.max_length differs from the cache's",
        "dtype": "cache.dtype differs from the cache's storage precision",
    }
    for name, problem in what.items():
        if expected.get(name) is None:  # teacher-free recipe: no teacher weights to compare
            continue
        if cached.get(name) != expected[name]:
            digest = name in ("teacher", "tokenizer")
            shown = "" if digest else f" ({cached.get(name)!r} cached, {expected[name]!r} now)"
            raise UserError(f"stale cache: {problem}{shown}", key="cache.dir", fix=_REBUILD)


def _locate(store: CacheStore, split: str, items: list[dict[str, Any]]) -> np.ndarray:
    locations = store.locate([item_key(item) for item in items])
    absent = np.flatnonzero(locations[:, 1] < 0)
    if len(absent):
        raise UserError(
            f"{len(absent)} of {len(items)} {split} examples are not in the cache (different data, or examples "
            "added after caching, e.g. by augmentation)",
            key="cache.dir",
            fix=_REBUILD,
        )
    return locations
