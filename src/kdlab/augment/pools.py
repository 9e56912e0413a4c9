"""Unlabelled input pools: a split of a ready task, or a file of inputs, read as examples without labels.

A pool supplies extra inputs for the teacher to label (e.g. in-domain sentences without gold labels, or
another language pair's source sentences for quality estimation). Only its input columns are read; any
labels it has are ignored, so the student never sees a gold label from a pool.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kdlab.augment.filter import subsample
from kdlab.config import PoolConfig
from kdlab.data.tasks import Example, TaskSpec, load_examples, read_inputs, ready_task
from kdlab.errors import UserError


def _pairs(has_pair: bool) -> str:
    return "text pairs" if has_pair else "single texts"


def _pool_from_task(pool: PoolConfig, prefix: str, task: TaskSpec, data_root: str | Path | None) -> list[Example]:
    assert pool.task is not None
    try:
        spec = ready_task(pool.task, data_root)
    except UserError as exc:
        raise UserError(exc.problem, key=f"{prefix}.task", fix=exc.fix) from None
    if (spec.text_pair is not None) != (task.text_pair is not None):
        raise UserError(
            f"pool task {pool.task!r} has {_pairs(spec.text_pair is not None)}, but the task "
            f"{task.name!r} has {_pairs(task.text_pair is not None)}",
            key=f"{prefix}.task",
            fix="use a pool with the same kind of input as the task",
        )
    if pool.split == "dev" and spec.dev is None and spec.dev_fraction is None:
        raise UserError(f"pool task {pool.task!r} has no dev split", key=f"{prefix}.split", fix="use split: train")
    try:
        examples = load_examples(spec, pool.split)
    except UserError as exc:
        # load_examples blames task.* keys, which would point at the training task rather than this pool.
        raise UserError(f"pool task {pool.task!r}: {exc.problem}", key=f"{prefix}.task", fix=exc.fix) from None
    return [dataclasses.replace(example, label=None) for example in examples]


def _pool_from_file(pool: PoolConfig, prefix: str, task: TaskSpec) -> list[Example]:
    assert pool.path is not None
    if pool.text_pair is not None and task.text_pair is None:
        raise UserError(
            f"the pool gives a text_pair column ({pool.text_pair!r}), but the task {task.name!r} has single texts",
            key=f"{prefix}.text_pair",
            fix=f"remove {prefix}.text_pair",
        )
    # Columns default to the task's, so a pool file laid out like the training file needs no column settings.
    return read_inputs(
        Path(pool.path),
        format=pool.format,
        header=pool.header,
        text=pool.text if pool.text is not None else task.text,
        text_pair=pool.text_pair if pool.text_pair is not None else task.text_pair,
        key=f"{prefix}.path",
        text_key=f"{prefix}.text",
        text_pair_key=f"{prefix}.text_pair",
    )


def read_pool(
    pool: PoolConfig, index: int, task: TaskSpec, data_root: str | Path | None, *, seed: int = 0
) -> list[Example]:
    """The inputs of ``augment.pools[index]`` as unlabelled examples (``label=None``), in file order.

    * ``pool.task``: the ``pool.split`` split of that ready task (paths resolved against ``data_root``), with
      its labels dropped.
    * ``pool.path``: the file's ``text`` / ``text_pair`` columns (``format`` / ``header`` as for a task file);
      a column not given defaults to the task's (``task.text`` / ``task.text_pair``).

    The pool must have the task's kind of input (text pairs for a pair task, single texts otherwise).
    ``max_examples`` keeps a random subset drawn with ``seed`` (the same on every run), in file order.
    Every :class:`UserError` names ``augment.pools[index].<field>``.
    """
    prefix = f"augment.pools[{index}]"
    if pool.task is not None:
        examples = _pool_from_task(pool, prefix, task, data_root)
    else:
        examples = _pool_from_file(pool, prefix, task)
    keep = subsample(len(examples), pool.max_examples, seed)
    return [examples[i] for i in keep.tolist()]
