"""cache: run the teacher once over the recipe's data and store the knowledge its losses need.

Every check (recipe, teacher, data, module paths, output folder) runs before the teacher does; the cache is
written to ``<dir>.tmp`` and appears under ``cache.dir`` only when complete (manifest last, then one rename).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlab.commands.build import encode_data, load_teacher, task_spec, teacher_widths
from kdlab.commands.run_setup import make_accelerator
from kdlab.commands.training_set import augmentation_candidates, check_augment, load_splits
from kdlab.commands.words import cache_words
from kdlab.config import Recipe
from kdlab.data.treebank import is_word_task
from kdlab.engine.ensemble import check_teachers
from kdlab.engine.teacher import LiveTeacher, selection_spec
from kdlab.errors import UserError
from kdlab.knowledge.fingerprint import keys_digest
from kdlab.knowledge.recipe import fingerprint, recipe_signals
from kdlab.knowledge.signals import Signal
from kdlab.knowledge.store import check_target, commit, discard, tmp_dir_for
from kdlab.knowledge.write import item_key, signal_names, unique_signals, write_shards
from kdlab.methods import FeatureMatcher, Objective, Stage
from kdlab.methods.matches import tap_name
from kdlab.methods.selection import width_dims
from kdlab.models import resolve_model


@dataclass
class CacheSummary:
    dir: Path
    examples: int
    bytes: int
    seconds: float
    signals: list[str]

    @property
    def bytes_per_example(self) -> float:
        return self.bytes / max(self.examples, 1)


def check_recipe(recipe: Recipe, overwrite: bool) -> Path:
    """The recipe can be cached, and its cache folder may be written (checked before the teacher runs)."""
    if recipe.cache.dir is None:
        raise UserError("the recipe names no cache folder", key="cache.dir", fix="--set cache.dir=PATH")
    if recipe.distill.method in ("none", "online"):  # gold labels only, or peers teaching each other
        raise UserError(
            f"method {recipe.distill.method!r} trains without a teacher: there is no teacher knowledge to cache",
            key="distill.method",
            fix="use a distillation method (vanilla, internal, pid, sid)",
        )
    target = Path(recipe.cache.dir)
    check_target(target, overwrite)
    return target


def cache(recipe: Recipe, overwrite: bool = False, progress: bool = True) -> CacheSummary:
    """Run the teacher once over the train and dev splits and write the cache."""
    if is_word_task(recipe.task) and recipe.cache.dir is not None:
        examples, size, seconds, stored = cache_words(recipe, overwrite)
        return CacheSummary(Path(recipe.cache.dir), examples, size, seconds, [stored])
    target = check_recipe(recipe, overwrite)
    cfg = recipe.distill
    spec = task_spec(recipe.task)
    check_augment(recipe)
    check_teachers(recipe, spec)
    teacher, tokenizer = load_teacher(recipe, spec, cfg.uses_attention)
    splits = load_splits(spec, recipe.task, recipe.train.seed)
    # Every augmentation candidate is cached (the filter, if any, picks among them when training).
    splits = augmentation_candidates(recipe, spec, splits, tokenizer.mask_token)
    data = encode_data(splits.training, splits.dev, spec, recipe.task, tokenizer)
    matcher = FeatureMatcher(cfg.matches)
    widths = teacher_widths(matcher, teacher, data.collate(data.train[:2]))
    objective = Objective(cfg, spec.regression)
    signals = recipe_signals(recipe, matcher, objective)
    if not signals:
        raise UserError(
            "the recipe uses no teacher knowledge (alpha 0 and no matches): nothing to cache",
            key="distill.alpha",
            fix="set distill.alpha above 0 or add distill.matches",
        )
    acc = make_accelerator(recipe.train.model_copy(update={"mixed_precision": "no"}))
    live = LiveTeacher(teacher, matcher, objective, tokenizer.sep_token_id)
    live.prepare(acc.device, acc.autocast)
    with_logits = any(signal.match is None for signal in signals)
    stage = Stage("cache", tuple(range(len(matcher.matches))), with_logits, 1)
    items = data.train + (data.dev or [])
    tmp = tmp_dir_for(target)
    if acc.is_main_process:
        discard(tmp)  # leftovers of an interrupted run
    acc.wait_for_everyone()
    start = time.perf_counter()
    write_shards(
        live,
        stage,
        signals,
        items,
        data.collate,
        tmp,
        acc.process_index,
        acc.num_processes,
        recipe.train.eval_batch_size,
        recipe.cache.shard_examples,
        acc.device,
        progress=progress and acc.is_main_process,
    )
    acc.wait_for_everyone()
    manifest: dict[str, Any] = {}
    stored = unique_signals(signals)
    if acc.is_main_process:
        described = _manifest(recipe, stored, widths, matcher, items, tokenizer, len(data.train), len(data.dev or []))
        manifest = commit(tmp, target, described, overwrite=overwrite, world_size=acc.num_processes)
    acc.wait_for_everyone()
    seconds = time.perf_counter() - start
    total_bytes = sum(int(shard["bytes"]) for shard in manifest.get("shards", []))
    return CacheSummary(target, int(manifest.get("examples", 0)), total_bytes, seconds, [s.signature for s in stored])


def _manifest(
    recipe: Recipe,
    signals: list[Signal],  # one per signature
    widths: dict[str, int],
    matcher: FeatureMatcher,
    items: list[dict[str, Any]],
    tokenizer: Any,
    n_train: int,
    n_dev: int,
) -> dict[str, Any]:
    teacher_path = resolve_model(recipe.teacher.model or "", key="teacher.model")
    names = signal_names(signals)
    described = {}
    for signal in signals:
        entry: dict[str, Any] = {"name": names[signal.signature], "kind": signal.kind}
        if signal.match is not None:
            width = widths[tap_name(signal.match)]
            entry["width"] = width
            dims = width_dims(selection_spec(matcher, signal.match), width) if signal.kind == "hidden" else None
            entry["shared_dims"] = dims.tolist() if dims is not None else None
        described[signal.signature] = entry
    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "fingerprint": fingerprint(recipe, tokenizer, teacher_path),
        "data_digest": keys_digest(item_key(item) for item in items),
        "teacher_model": teacher_path,
        "task": recipe.task.name or recipe.task.train,
        "splits": {"train": n_train, "dev": n_dev},
        "signals": described,
    }
