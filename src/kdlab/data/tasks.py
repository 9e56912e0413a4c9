"""Task descriptions (which files, which columns, which labels and metrics) and loading them as examples.

A :class:`TaskSpec` says everything needed to turn a data file into :class:`Example` objects. The ready
tasks in :data:`TASKS` describe the public data sets under the shared data root (see ``ready_task``); users
describe their own files with the same fields (the config layer builds ``TaskSpec(...)`` directly, or calls
``custom_task``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from kdlab.data.readers import Rows, detect_format, read_rows
from kdlab.errors import UserError
from kdlab.metrics import CLASSIFICATION_METRICS, METRICS, REGRESSION_METRICS

DEFAULT_CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "f1")
DEFAULT_REGRESSION_METRICS: tuple[str, ...] = ("pearson", "spearman", "mae", "rmse")

DATA_ROOT_ENV = "KDLAB_DATA_ROOT"
"""Environment variable naming the folder that holds the ready data sets (``sst2/``, ``cola/``, ...)."""

Column = str | int
Split = Literal["train", "dev"]


def _is_column(value: object) -> bool:
    # bool is an int subclass; `text: true` in YAML is a mistake, not column 1.
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and value != "") or (isinstance(value, int) and value >= 0)


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's data lives and how to read it.

    ``train`` / ``dev`` are file paths (``None`` when a split does not exist); ``format`` is ``tsv``, ``csv``
    or ``jsonl`` (``None``: from the file suffix). Columns (``text``, ``text_pair``, ``label``) are header
    names, or 0-based indices for files without a header line. ``label_names`` lists the label values as
    written in the file; the i-th name becomes class id i (required for classification, absent for
    regression).
    ``dev_fraction`` holds out that share of the train file as the dev split, chosen by each example's uid
    hash, so the split is the same on every run and machine; it is only allowed when there is no dev file.

    Empty ``metrics`` / ``main_metric`` take the defaults for the task kind. Lists are accepted where tuples
    are declared and are converted, so the spec stays hashable.

    Construction only normalises; it does not validate, so a spec may be built in steps (a ready task, then
    ``dataclasses.replace`` with the user's overrides). Call ``validate()`` once it is complete;
    ``load_examples`` validates before reading anything.
    """

    name: str
    train: Path | None = None
    dev: Path | None = None
    format: str | None = None
    header: bool = True
    text: Column = "sentence"
    text_pair: Column | None = None
    label: Column = "label"
    label_names: tuple[str, ...] | None = None
    regression: bool = False
    metrics: tuple[str, ...] = ()
    main_metric: str = ""
    dev_fraction: float | None = None

    def __post_init__(self) -> None:
        # Normalise what a YAML/JSON config naturally produces (strings for paths, lists, numeric label
        # names) so every later consumer sees one representation. Frozen: hence object.__setattr__.
        def put(field: str, value: object) -> None:
            object.__setattr__(self, field, value)

        for field in ("train", "dev"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, Path):
                put(field, Path(value))
        if self.label_names is not None and not isinstance(self.label_names, str):
            put("label_names", tuple(str(name) for name in self.label_names))
        if self.metrics is None or len(self.metrics) == 0:
            put("metrics", DEFAULT_REGRESSION_METRICS if self.regression else DEFAULT_CLASSIFICATION_METRICS)
        elif not isinstance(self.metrics, str):
            put("metrics", tuple(self.metrics))
        if not self.main_metric and isinstance(self.metrics, tuple) and self.metrics:
            put("main_metric", self.metrics[0])

    @property
    def num_labels(self) -> int:
        """Size of the model's output layer: the number of classes, or 1 for regression."""
        if self.regression or self.label_names is None:
            return 1
        return len(self.label_names)

    def validate(self) -> None:
        """Raise :class:`UserError` (naming the ``task.*`` config key) for any inconsistent field.

        Files are not opened here; a missing file is reported when the split is loaded.
        """
        if not isinstance(self.name, str) or not self.name.strip():
            raise UserError("the task needs a non-empty name", key="task.name", fix="e.g. name: my-task")
        if self.train is None and self.dev is None:
            raise UserError(
                "no data file given",
                key="task.train",
                fix="set task.train (and task.dev, or task.dev_fraction) to your data files",
            )
        if self.format is not None:
            detect_format("", self.format)  # raises for an unknown format
        if not isinstance(self.header, bool):
            raise UserError(f"header must be true or false, got {self.header!r}", key="task.header", fix="header: true")
        self._validate_columns()
        self._validate_labels()
        self._validate_metrics()
        if self.dev_fraction is not None:
            fraction = self.dev_fraction
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
                raise UserError(
                    f"dev_fraction must be a number between 0 and 1 (exclusive), got {fraction!r}",
                    key="task.dev_fraction",
                    fix="e.g. dev_fraction: 0.1 holds out 10% of the train file",
                )
            if self.dev is not None:
                raise UserError(
                    "both a dev file and dev_fraction are given",
                    key="task.dev_fraction",
                    fix="remove task.dev_fraction to use the dev file, or remove task.dev to split train",
                )
            if self.train is None:
                raise UserError(
                    "dev_fraction splits the train file, but no train file is given",
                    key="task.train",
                    fix="set task.train",
                )

    def _validate_columns(self) -> None:
        columns = {"task.text": self.text, "task.label": self.label}
        if self.text_pair is not None:
            columns["task.text_pair"] = self.text_pair
        for key, column in columns.items():
            if not _is_column(column):
                raise UserError(
                    f"a column is a header name or a 0-based index, got {column!r}",
                    key=key,
                    fix='e.g. "sentence", or 0 for the first column of a file without header',
                )
            if isinstance(column, str) and not self.header and not self._is_jsonl():
                raise UserError(
                    f"column {column!r} is a name, but the file has no header line (header: false)",
                    key=key,
                    fix="give the 0-based column index instead, or set task.header: true",
                )
            if isinstance(column, int) and self._is_jsonl():
                raise UserError(
                    f"column {column!r} is an index, but JSON lines rows are addressed by key",
                    key=key,
                    fix="give the key name, e.g. text: sentence",
                )
        seen: dict[Column, str] = {}
        for key, column in columns.items():
            if column in seen:
                raise UserError(
                    f"{seen[column]} and {key} both name column {column!r}",
                    key=key,
                    fix="each of text, text_pair and label must be a different column",
                )
            seen[column] = key

    def _is_jsonl(self) -> bool:
        # Only decidable when a format or a recognisable suffix is there; otherwise the reader reports it.
        if self.format is not None:
            return detect_format("", self.format) == "jsonl"
        path = self.train or self.dev
        return path is not None and path.suffix.lower() in (".jsonl", ".json")

    def _validate_labels(self) -> None:
        if self.regression:
            if self.label_names is not None:
                raise UserError(
                    "a regression task has no label names",
                    key="task.label_names",
                    fix="remove task.label_names, or set task.regression: false for classification",
                )
            return
        names = self.label_names
        if names is None or isinstance(names, str):
            raise UserError(
                "a classification task needs the list of label names"
                + (f" (got the single string {names!r})" if isinstance(names, str) else ""),
                key="task.label_names",
                fix='list the label values as written in the file, in class-id order, e.g. ["0", "1"] '
                "(or set task.regression: true for numeric targets)",
            )
        if len(names) < 2:
            raise UserError(
                f"a classification task needs at least 2 label names, got {list(names)}",
                key="task.label_names",
                fix="list every label value that occurs in the file",
            )
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates or any(not name.strip() for name in names):
            raise UserError(
                f"label names must be distinct and non-empty, got {list(names)}",
                key="task.label_names",
                fix="list each label value once",
            )

    def _validate_metrics(self) -> None:
        allowed = REGRESSION_METRICS if self.regression else CLASSIFICATION_METRICS
        kind = "regression" if self.regression else "classification"
        if isinstance(self.metrics, str):
            raise UserError(
                f"metrics must be a list, got the string {self.metrics!r}",
                key="task.metrics",
                fix=f"e.g. metrics: [{self.metrics}]",
            )
        for metric in self.metrics:
            if metric not in METRICS:
                raise UserError(
                    f"unknown metric {metric!r}",
                    key="task.metrics",
                    fix=f"use some of {', '.join(sorted(allowed))} for a {kind} task",
                )
            if metric not in allowed:
                raise UserError(
                    f"metric {metric!r} does not apply to a {kind} task",
                    key="task.metrics",
                    fix=f"use some of {', '.join(sorted(allowed))}",
                )
        if self.main_metric not in self.metrics:
            raise UserError(
                f"main metric {self.main_metric!r} is not among the task's metrics {list(self.metrics)}",
                key="task.main_metric",
                fix="pick one of task.metrics (it selects the best checkpoint)",
            )


@dataclass(frozen=True)
class Example:
    """One input: a text (or text pair) and its class id or real-valued target, or ``None`` when unlabelled.

    ``label`` is ``None`` for inputs that have no gold label, such as augmented inputs (unlabelled pools and
    perturbed training inputs, see :mod:`kdlab.augment`) that only the teacher labels; everything that reads
    gold labels (the hard-label loss, metrics) must skip or refuse them.

    ``uid`` is the SHA-1 of the text and pair, the same on every machine and run; it keys held-out splits
    and cached teacher outputs. Identical inputs share a uid on purpose (a duplicated sentence must not land
    in both train and dev). The label is not part of the uid: an input keeps its uid when its label is dropped.
    """

    text: str
    text_pair: str | None
    label: int | float | None
    uid: str = ""

    def __post_init__(self) -> None:
        if not self.uid:
            object.__setattr__(self, "uid", example_uid(self.text, self.text_pair))


def example_uid(text: str, text_pair: str | None = None) -> str:
    """Stable hex id of an input. A NUL separates the pair so ("ab", "c") and ("a", "bc") differ."""
    payload = text if text_pair is None else f"{text}\x00{text_pair}"
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()


def in_dev_split(uid: str, dev_fraction: float) -> bool:
    """Whether the example with ``uid`` belongs to the held-out dev share (uniform in the hash)."""
    return int(uid[:15], 16) / 16**15 < dev_fraction


# ----------------------------------------------------------------------------------------------------------
# Ready tasks
# ----------------------------------------------------------------------------------------------------------

MLQE_PAIRS: tuple[str, ...] = ("en-de", "en-zh", "et-en", "ne-en", "ro-en", "ru-en", "si-en")


def package_sample_dir() -> Path:
    """Folder of the SST-2 sample shipped inside the package (used by the demo, needs no data root)."""
    # kdlab is installed as plain files (setuptools package-data), so the resource is a real folder.
    return Path(str(resources.files("kdlab.resources").joinpath("sst2_sample")))


def _ready_tasks() -> dict[str, TaskSpec]:
    tasks = [
        TaskSpec(
            name="sst2",
            train=Path("sst2/train.tsv"),
            dev=Path("sst2/dev.tsv"),
            text="sentence",
            label="label",
            label_names=("0", "1"),
            metrics=("accuracy", "f1"),
            main_metric="accuracy",
        ),
        TaskSpec(
            name="sst2-sample",
            train=package_sample_dir() / "train.tsv",
            dev=package_sample_dir() / "dev.tsv",
            text="sentence",
            label="label",
            label_names=("0", "1"),
            metrics=("accuracy", "f1"),
            main_metric="accuracy",
        ),
        TaskSpec(
            # GLUE CoLA as released: source, label, original mark, sentence; no header line.
            name="cola",
            train=Path("cola/train.tsv"),
            dev=Path("cola/dev.tsv"),
            header=False,
            text=3,
            label=1,
            label_names=("0", "1"),
            metrics=("mcc", "accuracy"),
            main_metric="mcc",
        ),
        TaskSpec(
            # Entailment is the positive class (id 1), so "f1" is the F1 of detecting entailment. Note that
            # the Hugging Face `glue/rte` data set numbers them the other way (entailment = 0): a teacher
            # fine-tuned elsewhere on that numbering has its two logits swapped relative to kdlab's ids.
            name="rte",
            train=Path("rte/train.tsv"),
            dev=Path("rte/dev.tsv"),
            text="sentence1",
            text_pair="sentence2",
            label="label",
            label_names=("not_entailment", "entailment"),
            metrics=("accuracy", "f1"),
            main_metric="accuracy",
        ),
        TaskSpec(
            # Only one file exists; 10% of it is held out by uid hash. Class order follows AG News's own
            # class numbering (1 World, 2 Sports, 3 Business, 4 Sci/Tech).
            name="agnews",
            train=Path("agnews/train.tsv"),
            header=False,
            text=0,
            label=1,
            label_names=("World", "Sports", "Business", "Sci/Tech"),
            metrics=("accuracy", "f1"),
            main_metric="accuracy",
            dev_fraction=0.1,
        ),
    ]
    tasks += [
        TaskSpec(
            name=f"mlqe-{pair}",
            train=Path(f"mlqe-pe/{pair}/train.tsv"),
            dev=Path(f"mlqe-pe/{pair}/dev.tsv"),
            text="original",
            text_pair="translation",
            label="z_mean",
            regression=True,
            metrics=DEFAULT_REGRESSION_METRICS,
            main_metric="pearson",
        )
        for pair in MLQE_PAIRS
    ]
    return {task.name: task for task in tasks}


TASKS: dict[str, TaskSpec] = _ready_tasks()
"""Ready tasks by name; paths are relative to the data root (``sst2-sample``'s: absolute, in the package)."""


def default_data_root() -> Path:
    """``$KDLAB_DATA_ROOT`` when set, else ``../shared/data`` relative to the current directory."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(env) if env else Path.cwd().parent / "shared" / "data"


def ready_task(name: str, root: str | Path | None = None) -> TaskSpec:
    """The ready task ``name``, its paths resolved against ``root`` (default: ``default_data_root()``)."""
    if name not in TASKS:
        raise UserError(
            f"unknown task {name!r}",
            key="task.name",
            fix=f"use one of {', '.join(sorted(TASKS))}, or describe your own files with task.train, "
            "task.dev, task.text, task.label and task.label_names",
        )
    spec = TASKS[name]
    base = Path(root) if root is not None else default_data_root()
    # Joining an absolute path (the package sample) leaves it unchanged.
    return dataclasses.replace(
        spec,
        train=base / spec.train if spec.train is not None else None,
        dev=base / spec.dev if spec.dev is not None else None,
    )


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------

_Getter = Callable[[object, int], str]


def _column_getter(rows: Rows, column: Column, key: str, path: Path, fmt: str) -> _Getter:
    """A function (row, row_number) -> value for ``column``; checks once what can be checked once."""
    first = rows[0]
    if isinstance(first, list):
        width = len(first)
        if isinstance(column, str):
            raise UserError(
                f"column {column!r} is a name, but {str(path)!r} is read without a header",
                key=key,
                fix="give the 0-based column index, or set task.header: true",
            )
        if column >= width:
            raise UserError(
                f"column index {column} is out of range: {str(path)!r} has {width} columns (0..{width - 1})",
                key=key,
                fix=f"use an index from 0 to {width - 1}",
            )
        return lambda row, _number: row[column]  # type: ignore[index]

    names = list(first)
    if isinstance(column, int):
        if fmt == "jsonl":
            raise UserError(
                f"column {column} is an index, but JSON lines rows are addressed by key",
                key=key,
                fix=f"give the key name (the first row has {names})",
            )
        if column >= len(names):
            raise UserError(
                f"column index {column} is out of range: {str(path)!r} has {len(names)} columns",
                key=key,
                fix=f"use a header name ({', '.join(names)}) or an index from 0 to {len(names) - 1}",
            )
        column = names[column]
    if fmt != "jsonl" and column not in first:
        raise UserError(
            f"{str(path)!r} has no column {column!r}; its header has {names}",
            key=key,
            fix="use one of those names; if the first line is data rather than a header, "
            "set task.header: false and give 0-based column indices",
        )

    def get(row: object, number: int) -> str:
        try:
            return row[column]  # type: ignore[index]
        except KeyError:
            raise UserError(
                f"row {number} of {str(path)!r} has no key {column!r} (it has {sorted(row)})",  # type: ignore[call-overload]
                key=key,
                fix="every JSON line needs the text and label keys; fix the row or the key name",
            ) from None

    return get


def _split_source(spec: TaskSpec, split: str) -> tuple[Path, str]:
    if split == "train":
        if spec.train is None:
            raise UserError(
                f"task {spec.name!r} has no train file", key="task.train", fix="set task.train to your file"
            )
        return spec.train, "task.train"
    if split == "dev":
        if spec.dev is not None:
            return spec.dev, "task.dev"
        if spec.dev_fraction is not None and spec.train is not None:
            return spec.train, "task.train"
        raise UserError(
            f"task {spec.name!r} has no dev data",
            key="task.dev",
            fix="set task.dev to a file, or task.dev_fraction (e.g. 0.1) to hold out part of task.train",
        )
    raise ValueError(f"split must be 'train' or 'dev', got {split!r}")


def _read_examples(spec: TaskSpec, path: Path, key: str) -> list[Example]:
    fmt = detect_format(path, spec.format, key=key)
    rows = read_rows(path, fmt, spec.header, key=key)
    if not rows:
        raise UserError(
            f"{str(path)!r} has no data rows",
            key=key,
            fix="check the file; with header: true the first line is the header, not data",
        )
    get_text = _column_getter(rows, spec.text, "task.text", path, fmt)
    get_pair = _column_getter(rows, spec.text_pair, "task.text_pair", path, fmt) if spec.text_pair is not None else None
    get_label = _column_getter(rows, spec.label, "task.label", path, fmt)
    label_ids = {name: index for index, name in enumerate(spec.label_names or ())}

    examples: list[Example] = []
    for number, row in enumerate(rows, start=1):
        # Surrounding whitespace carries no meaning (SST-2 rows end in a space) but would change the uid.
        text = get_text(row, number).strip()
        pair = get_pair(row, number).strip() if get_pair is not None else None
        raw_label = get_label(row, number).strip()
        label: int | float
        if spec.regression:
            label = _parse_target(raw_label, number, spec.label, path)
        elif raw_label in label_ids:
            label = label_ids[raw_label]
        else:
            seen = sorted({get_label(other, i).strip() for i, other in enumerate(rows, start=1)})
            shown = seen[:20] + (["..."] if len(seen) > 20 else [])
            raise UserError(
                f"row {number} of {str(path)!r} has label {raw_label!r}, which is not in label_names "
                f"{list(spec.label_names or ())}; the label column holds {shown}",
                key="task.label_names",
                fix="list every label value of the file in task.label_names (in class-id order), "
                "or check that task.label names the label column",
            )
        examples.append(Example(text=text, text_pair=pair, label=label))
    return examples


def read_inputs(
    path: Path,
    *,
    format: str | None,
    header: bool,
    text: Column,
    text_pair: Column | None,
    key: str,
    text_key: str | None = None,
    text_pair_key: str | None = None,
) -> list[Example]:
    """Read only the input columns of a file, as unlabelled examples (``label=None``), in file order.

    For inputs without gold labels (unlabelled pools for teacher-labelled augmentation). Columns, formats and
    stripping work as for a task's files (``text`` / ``text_pair``: header names, or 0-based indices without
    a header; ``format`` ``None``: from the suffix), so a row gives the same uid here as in a labelled file.
    Errors are :class:`UserError`: about the file they name ``key`` (e.g. ``augment.pools[0].path``), about a
    column ``text_key`` / ``text_pair_key`` (default ``key``), so a mistake points at the setting to change.
    """
    path = Path(path)
    column_keys = {"text": text_key or key, "text_pair": text_pair_key or key}
    for field, column in (("text", text), ("text_pair", text_pair)):
        if column is not None and not _is_column(column):
            raise UserError(
                f"a column is a header name or a 0-based index, got {column!r}",
                key=column_keys[field],
                fix='e.g. "sentence", or 0 for the first column of a file without header',
            )
    if text_pair is not None and text_pair == text:
        raise UserError(
            f"text and text_pair both name column {text!r}",
            key=column_keys["text_pair"],
            fix="the two texts of a pair must be different columns",
        )
    try:
        fmt = detect_format(path, format, key=key)
    except UserError as exc:
        # detect_format blames task.format for an unknown format name; here the setting is the caller's.
        raise UserError(exc.problem, key=key, fix=exc.fix) from None
    rows = read_rows(path, fmt, header, key=key)
    if not rows:
        raise UserError(
            f"{str(path)!r} has no data rows",
            key=key,
            fix="check the file; with header: true the first line is the header, not data",
        )
    get_text = _column_getter(rows, text, column_keys["text"], path, fmt)
    get_pair = _column_getter(rows, text_pair, column_keys["text_pair"], path, fmt) if text_pair is not None else None
    # Same stripping as _read_examples: the uid must not depend on which reader saw the row.
    return [
        Example(
            text=get_text(row, number).strip(),
            text_pair=get_pair(row, number).strip() if get_pair is not None else None,
            label=None,
        )
        for number, row in enumerate(rows, start=1)
    ]


def _parse_target(raw: str, number: int, column: Column, path: Path) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
        bad = True
    else:
        bad = not math.isfinite(value)
    if bad:
        raise UserError(
            f"row {number} of {str(path)!r}: column {column!r} holds {raw!r}, not a finite number",
            key="task.label",
            fix="a regression target must be a number; check that task.label names the score column "
            "(or set task.regression: false for class labels)",
        )
    return value


def load_examples(spec: TaskSpec, split: Split, limit: int | None = None, seed: int = 0) -> list[Example]:
    """Read the ``split`` ("train" or "dev") of ``spec`` as examples, in file order.

    With ``dev_fraction``, both splits come from the train file: an example is dev when its uid hash falls in
    the held-out share, so the two splits are disjoint and stable. ``limit`` keeps a random subset of that
    size, drawn with ``seed`` (the same subset on every run) and still in file order. The config layer
    validates ranges, so a non-positive ``limit`` here is a programming error (ValueError).
    """
    spec.validate()
    path, key = _split_source(spec, split)
    examples = _read_examples(spec, path, key)
    if spec.dev_fraction is not None and spec.dev is None:
        want_dev = split == "dev"
        examples = [ex for ex in examples if in_dev_split(ex.uid, spec.dev_fraction) == want_dev]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if limit < len(examples):
            # Legacy RandomState: its stream is frozen across numpy versions, so subsets stay reproducible.
            chosen = np.random.RandomState(seed).permutation(len(examples))[:limit]
            examples = [examples[i] for i in sorted(chosen.tolist())]
    return examples


def _infer_label_names(rows: Rows, getter: _Getter) -> tuple[str, ...]:
    values = {getter(row, i).strip() for i, row in enumerate(rows, start=1)}
    try:
        # Integer labels keep their numeric order, so "0".."9" map to the ids they already are.
        return tuple(sorted(values, key=int))
    except ValueError:
        return tuple(sorted(values))


def custom_task(
    name: str,
    train: str | Path | None,
    dev: str | Path | None = None,
    *,
    text: Column = "sentence",
    label: Column = "label",
    text_pair: Column | None = None,
    label_names: Sequence[str] | None = None,
    regression: bool = False,
    header: bool = True,
    format: str | None = None,
    metrics: Sequence[str] | None = None,
    main_metric: str | None = None,
    dev_fraction: float | None = None,
) -> TaskSpec:
    """Describe a user's own files. Like ``TaskSpec(...)``, but infers ``label_names`` when not given.

    Inferred names are the distinct values of the train file's label column, in numeric order when they are
    all integers, else sorted as text. Give ``label_names`` to choose the order yourself (binary F1 counts
    the second name, id 1, as the positive class).
    """
    if not regression and label_names is None and train is not None:
        path = Path(train)
        fmt = detect_format(path, format, key="task.train")
        rows = read_rows(path, fmt, header, key="task.train")
        if not rows:
            raise UserError(f"{str(path)!r} has no data rows", key="task.train", fix="check the file")
        if not _is_column(label):
            raise UserError(f"bad label column {label!r}", key="task.label", fix="a header name or an index")
        label_names = _infer_label_names(rows, _column_getter(rows, label, "task.label", path, fmt))
    spec = TaskSpec(
        name=name,
        train=Path(train) if train is not None else None,
        dev=Path(dev) if dev is not None else None,
        format=format,
        header=header,
        text=text,
        text_pair=text_pair,
        label=label,
        label_names=tuple(label_names) if label_names is not None else None,
        regression=regression,
        metrics=tuple(metrics) if metrics else (),
        main_metric=main_metric or "",
        dev_fraction=dev_fraction,
    )
    spec.validate()
    return spec
