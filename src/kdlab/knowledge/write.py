"""Run a teacher once over a data set and store the knowledge a recipe needs, example by example.

Each process takes every ``world``-th length-sorted batch and writes its own shards; the main process merges the
per-process indexes and commits the cache (``store.commit``) only after every process has finished, so an
interrupted run never leaves a usable-looking cache behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kdlab.data.encoding import TEACHER_PREFIX
from kdlab.engine.evaluation import length_sorted_batches
from kdlab.engine.teacher import LiveTeacher
from kdlab.knowledge.signals import Signal, per_example_arrays
from kdlab.knowledge.store import ShardWriter, example_key
from kdlab.methods.stages import Stage


def unique_signals(signals: Sequence[Signal]) -> list[Signal]:
    """One stored signal per signature, however many matches read it (e.g. two student layers, one teacher layer)."""
    first: dict[str, Signal] = {}
    for signal in signals:
        first.setdefault(signal.signature, signal)
    return list(first.values())


def signal_names(signals: Sequence[Signal]) -> dict[str, str]:
    """Short field prefixes for the signals of one cache ("s0", "s1", ...), by signature."""
    return {signal.signature: f"s{n}" for n, signal in enumerate(signals)}


def item_key(item: dict[str, Any]) -> tuple[int, int]:
    """The cache key of an item: the content hash of what the *teacher* reads (its own view when it has one)."""
    if f"{TEACHER_PREFIX}input_ids" in item:
        return example_key(item[f"{TEACHER_PREFIX}input_ids"], item.get(f"{TEACHER_PREFIX}token_type_ids"))
    return example_key(item["input_ids"], item.get("token_type_ids"))


def write_shards(
    teacher: LiveTeacher,
    stage: Stage,
    signals: Sequence[Signal],
    items: Sequence[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    tmp_dir: Path,
    rank: int,
    world: int,
    batch_size: int,
    shard_examples: int,
    device: torch.device,
    progress: bool = True,
) -> int:
    """Write this process's share of ``items`` (deduplicated by content); returns the number of examples written."""
    signals = unique_signals(signals)
    names = signal_names(signals)
    fields: dict[str, str] = {}
    for signal in signals:
        fields.update(signal.field_dtypes(names[signal.signature]))
    writer = ShardWriter(tmp_dir, rank, fields, shard_examples=shard_examples)
    batches = length_sorted_batches(list(items), batch_size)[rank::world]
    written = 0
    for indices in tqdm(batches, desc="caching teacher knowledge", disable=not progress, leave=False):
        chunk = [items[i] for i in indices]
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        knowledge = teacher.signals(stage, batch, list(indices), "cache")
        for item, arrays in zip(chunk, per_example_arrays(signals, names, knowledge, len(chunk)), strict=True):
            written += writer.add(item_key(item), arrays)
    writer.close()
    return written
