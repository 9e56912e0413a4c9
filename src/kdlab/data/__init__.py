"""Data: reading files, the task registry, tokenisation with dynamic padding, and length-bucketed batches."""

from __future__ import annotations

from kdlab.data.batching import EpochBatches, padded_tokens
from kdlab.data.encoding import IGNORE_LABEL, Collator, encode, student_inputs, teacher_inputs
from kdlab.data.readers import FORMATS, detect_format, read_rows
from kdlab.data.tasks import (
    DATA_ROOT_ENV,
    MLQE_PAIRS,
    TASKS,
    Example,
    TaskSpec,
    custom_task,
    default_data_root,
    example_uid,
    load_examples,
    package_sample_dir,
    ready_task,
)

__all__ = [
    "DATA_ROOT_ENV",
    "FORMATS",
    "IGNORE_LABEL",
    "MLQE_PAIRS",
    "TASKS",
    "Collator",
    "EpochBatches",
    "Example",
    "TaskSpec",
    "custom_task",
    "default_data_root",
    "detect_format",
    "encode",
    "example_uid",
    "load_examples",
    "package_sample_dir",
    "padded_tokens",
    "read_rows",
    "ready_task",
    "student_inputs",
    "teacher_inputs",
]
