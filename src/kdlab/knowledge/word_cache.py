"""A word-level teacher's potentials stored once (``kdlab cache``), so students train without loading the teacher.

The cache holds, per training sentence, what :class:`~kdlab.engine.word_teacher.WordTeacherOutputs` holds: emissions
``[n, C]`` of a tagger or arc scores ``[n+1, n+1]`` of a parser, plus a CRF teacher's transitions. Sentences are
keyed by a hash of what the teacher read and where its words start, so any subset or order of the cached sentences
can be served, and a sentence the teacher never saw is reported instead of being served wrong outputs.

Layout: ``manifest.json`` (format, teacher, parsing, keys in storage order) and ``outputs.safetensors`` (all rows
flattened into one tensor, their offsets and shapes, and the extras). The sentence-level cache
(:mod:`kdlab.knowledge.store`) stores fixed-width rows in shards; word rows vary in shape, hence this small format.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdlab.data.encoding import TEACHER_PREFIX
from kdlab.engine.word_teacher import WordTeacherOutputs
from kdlab.errors import UserError
from kdlab.io import atomic_dir

FORMAT = "kdlab-word-teacher-cache"
MANIFEST = "manifest.json"
TENSORS = "outputs.safetensors"


def word_item_key(item: dict[str, Any]) -> str:
    """Hash of the teacher's view of one sentence: its token ids and the first token of every kept word."""
    ids = item.get(f"{TEACHER_PREFIX}input_ids", item["input_ids"])
    starts = item.get(f"{TEACHER_PREFIX}word_starts", item["word_starts"])
    return hashlib.sha1(json.dumps([list(ids), list(starts)]).encode("ascii")).hexdigest()


def is_word_cache(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_word_target(folder: Path, overwrite: bool) -> None:
    """UserError unless ``folder`` may receive a new cache (checked before the teacher runs)."""
    if not folder.exists():
        return
    if not overwrite:
        raise UserError(
            f"{folder} already exists",
            key="cache.dir",
            fix="train from it as it is, choose another folder, or overwrite it (kdlab cache --overwrite)",
        )
    if not (folder.is_dir() and (is_word_cache(folder) or not any(folder.iterdir()))):
        raise UserError(
            f"{folder} exists and is not a kdlab word cache; refusing to replace it",
            key="cache.dir",
            fix="choose another folder (overwrite only replaces a previous cache)",
        )


def save_word_cache(
    folder: Path, outputs: WordTeacherOutputs, items: Sequence[dict[str, Any]], teacher: str, dtype: str
) -> int:
    """Write ``outputs`` (one row per item) atomically; returns the bytes of the tensor file."""
    keys = [word_item_key(item) for item in items]
    store = torch.float16 if dtype == "float16" else torch.float32
    shapes = torch.tensor([list(row.shape) for row in outputs.rows], dtype=torch.long).reshape(-1, 2)
    sizes = shapes.prod(dim=1)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    flat = torch.cat([row.reshape(-1) for row in outputs.rows]) if outputs.rows else torch.zeros(0)
    tensors = {"values": flat.to(store), "offsets": offsets, "shapes": shapes}
    tensors.update({f"extra.{name}": value.float().contiguous() for name, value in outputs.extras.items()})
    manifest = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "teacher": teacher,
        "parsing": outputs.parsing,
        "dtype": dtype,
        "keys": keys,
    }
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / TENSORS))
        (tmp / MANIFEST).write_text(json.dumps(manifest) + "\n", encoding="utf-8")
    return (folder / TENSORS).stat().st_size


def load_word_cache(folder: Path, items: Sequence[dict[str, Any]], parsing: bool) -> WordTeacherOutputs:
    """The cached outputs of ``items``, in their order; UserError for a missing, foreign or incomplete cache."""
    if not is_word_cache(folder):
        raise UserError(
            f"{folder} holds no word-level teacher cache",
            key="cache.dir",
            fix="write it first: kdlab cache <this recipe>",
        )
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if bool(manifest["parsing"]) != parsing:
        kind = "parser" if manifest["parsing"] else "tagger"
        raise UserError(f"{folder} holds a {kind}'s outputs", key="cache.dir", fix="use the cache of this task")
    tensors = load_file(str(folder / TENSORS))
    position = {key: i for i, key in enumerate(manifest["keys"])}
    values, offsets, shapes = tensors["values"].float(), tensors["offsets"], tensors["shapes"]
    rows = []
    for number, item in enumerate(items):
        index = position.get(word_item_key(item))
        if index is None:
            raise UserError(
                f"training sentence {number} is not in the cache {folder} (other data, tokenizer or max_length)",
                key="cache.dir",
                fix="rewrite the cache for this recipe: kdlab cache <recipe> --overwrite",
            )
        start, shape = int(offsets[index]), tuple(int(s) for s in shapes[index])
        rows.append(values[start : start + shape[0] * shape[1]].reshape(shape))
    extras = {name.removeprefix("extra."): t for name, t in tensors.items() if name.startswith("extra.")}
    return WordTeacherOutputs(rows, extras, parsing)
