"""Recipes: the YAML schema, loading, ``--set key=value`` overrides, and friendly validation errors.

A recipe is plain data. Nothing in it is imported or executed: model names are strings that kdlab resolves, losses
are names looked up in a registry, module paths are strings checked against the real model before training.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdlab.errors import UserError
from kdlab.losses import ATTENTION_LOSSES, FEATURE_LOSSES


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(_Section):
    """Which data to train and evaluate on: a ready task by name, or files with a column mapping."""

    name: str | None = Field(
        None,
        description="ready task: sst2, cola, rte, agnews, mlqe-<pair>, sst2-sample, ud-ewt-upos, ud-ewt-xpos, "
        "ud-ewt-deps, fashion-mnist (Debian's dataset-fashion-mnist), digits (sklearn's 8x8 digits)",
    )
    root: str | None = Field(None, description="folder holding the ready data sets (default ../shared/data)")
    train: str | None = None
    dev: str | None = None
    format: Literal["tsv", "csv", "jsonl", "conllu"] | None = None
    target: Literal["upos", "xpos", "deps"] | None = Field(
        None, description="conllu files: what to predict (a tag column, or heads + relations for 'deps')"
    )
    gold_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="word tasks: keep gold labels for this share of the training sentences (chosen by content "
        "hash, the same in every run); the teacher teaches the rest, finetune trains on the labelled share only",
    )
    header: bool | None = None
    text: str | int | None = None
    text_pair: str | int | None = None
    label: str | int | None = None
    label_names: list[str] | None = None
    regression: bool | None = None
    metrics: list[str] | None = None
    main_metric: str | None = None
    max_train_examples: int | None = Field(None, gt=0)
    max_dev_examples: int | None = Field(None, gt=0)
    max_length: int = Field(128, gt=1, le=4096)

    @model_validator(mode="after")
    def _named_or_described(self) -> TaskConfig:
        if self.format == "conllu" or self.target is not None:
            if self.name is None and (self.train is None or self.target is None or self.format != "conllu"):
                raise ValueError("a treebank task needs format: conllu, task.train and task.target (upos|xpos|deps)")
            return self
        if self.name is None and (self.train is None or self.text is None or self.label is None):
            raise ValueError("give a ready task (task.name) or files and columns (task.train, task.text, task.label)")
        return self


class TeacherConfig(_Section):
    model: str | None = Field(
        None,
        description="local folder, hub name, or the alias 'minilm'; may be left out when training from cache.dir "
        "with a pretrained student (nothing of the teacher is needed then); image tasks: a saved image model, or "
        "'cnn' / 'mlp' to train one from scratch with finetune",
    )
    width: int | None = Field(
        None, gt=0, description="image tasks, finetune of 'cnn' / 'mlp': channels of the first conv / hidden units"
    )
    head: Literal["softmax", "crf"] | None = Field(
        None, description="tagging tasks, finetune: the tagger head put on the teacher's encoder (default softmax)"
    )
    label_once: bool | None = Field(
        None,
        description="run the teacher once over the training data before training instead of at every step "
        "(outputs-only recipes); default: on for students with their own vocabulary and for augmented data",
    )


class StudentConfig(_Section):
    kind: Literal["shrink", "bilstm", "birnn", "pretrained", "cnn", "mlp"] = "shrink"
    layers: list[int] | str = Field("uniform:2", description="teacher layers kept by 'shrink'")
    hidden_size: int | None = Field(None, gt=0)
    num_attention_heads: int | None = Field(None, gt=0)
    intermediate_size: int | None = Field(None, gt=0)
    model: str | None = Field(None, description="for kind 'pretrained': the student's folder or hub name")
    head: Literal["softmax", "crf"] | None = Field(
        None, description="tagging tasks: the student's head, per-word softmax (MaxEnt) or a linear-chain CRF"
    )
    lstm_hidden_size: int = Field(300, gt=0)
    lstm_layers: int = Field(1, gt=0)
    vocab: Literal["teacher", "own"] | None = Field(
        None,
        description="bilstm/birnn: read the teacher's tokenization ('teacher', bilstm default) or a word vocabulary "
        "built from the training data ('own', birnn default); only outputs can be matched with 'own'",
    )
    vocab_max_size: int = Field(30000, gt=0, description="own vocabulary: most frequent words kept (per side)")
    vocab_min_freq: int = Field(1, gt=0, description="own vocabulary: words seen fewer times become [UNK]")
    lowercase: bool = Field(True, description="own vocabulary: lowercase before splitting into words")
    embedding_dim: int | None = Field(
        None, gt=0, description="own vocabulary: word embedding size (default 50 for birnn, 300 for bilstm)"
    )
    rnn_hidden_size: int = Field(50, gt=0, description="birnn: GRU hidden size per direction")
    dropout: float | None = Field(None, ge=0, lt=1, description="birnn default 0.5, bilstm default 0.1")
    width: int | None = Field(
        None, gt=0, description="image students (cnn, mlp): channels of the first conv block / hidden units"
    )

    @model_validator(mode="after")
    def _pretrained_needs_model(self) -> StudentConfig:
        if self.kind == "pretrained" and not self.model:
            raise ValueError("student.kind 'pretrained' needs student.model (a folder or hub name)")
        if self.vocab is not None and self.kind not in ("bilstm", "birnn"):
            raise ValueError(f"student.vocab applies to bilstm and birnn students, not {self.kind!r}")
        return self

    @property
    def own_vocab(self) -> bool:
        """Whether the student reads its own word tokenization (and the teacher its own, of the same text)."""
        if self.kind == "birnn":
            return self.vocab != "teacher"
        return self.kind == "bilstm" and self.vocab == "own"


class MatchConfig(_Section):
    """One intermediate match: teacher module output vs student module output, compared by a named loss."""

    teacher: str = Field(min_length=1, description="module path in the teacher, see `kdlab inspect`")
    student: str = Field(min_length=1, description="module path in the student")
    loss: str
    weight: float = Field(1.0, ge=0)
    tokens: str = Field(
        "all",
        description="all | cls | first:N | attention:N | attention_no_sep:N (top N by the teacher's [CLS] attention)",
    )
    width: float = Field(1.0, gt=0, le=1, description="fraction of the teacher's feature dimensions compared")
    width_mask: Literal["uniform", "random", "importance"] = "uniform"
    select_attention: str | None = Field(
        None,
        description="teacher attention module whose [CLS] attention ranks tokens for tokens: attention*; "
        "default: <teacher>.attention.self",
    )
    projection: bool = False
    stage: int | None = Field(None, ge=0, description="PID/SID stage; default: grouped by student layer")

    @field_validator("tokens")
    @classmethod
    def _known_tokens(cls, value: str) -> str:
        if not _TOKENS.match(value):
            raise ValueError("tokens must be all, cls, first:N, attention:N or attention_no_sep:N with N >= 1")
        return value

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        if value not in FEATURE_LOSSES:
            raise ValueError(f"unknown loss {value!r}; known losses: {', '.join(sorted(FEATURE_LOSSES))}")
        return value

    @model_validator(mode="after")
    def _attention_is_token_wise(self) -> MatchConfig:
        if self.loss in ATTENTION_LOSSES and (self.tokens != "all" or self.projection or self.width != 1):
            raise ValueError(
                "attention losses compare whole attention maps: use tokens: all, width: 1, projection: false"
            )
        return self

    @property
    def is_attention(self) -> bool:
        return self.loss in ATTENTION_LOSSES

    @property
    def ranks_by_attention(self) -> bool:
        return self.tokens.startswith("attention")

    @property
    def ranking_module(self) -> str:
        """The teacher attention module whose [CLS] attention ranks tokens (tokens: attention*)."""
        return self.select_attention or f"{self.teacher}.attention.self"


_TOKENS = re.compile(r"^(all|cls|(first|attention|attention_no_sep):[1-9]\d*)$")


Method = Literal["none", "vanilla", "internal", "pid", "sid", "token", "topk", "structural", "annealing", "online"]
WORD_METHODS = ("none", "token", "topk", "structural")
"""Methods of word-level tasks (tagging, parsing); the others distil sentence-level outputs and features."""


class PolicyConfig(_Section):
    """Learned teacher selection (Yuan et al. 2021): a Bernoulli policy per (example, teacher), trained by REINFORCE."""

    # 1e-3 barely moved the policy in the 250 steps of bench/multi_teacher.py (weak and noisy teachers still picked
    # about half the time); 1e-2 learned to drop them there.
    lr: float = Field(1e-2, gt=0, description="the policy's Adam learning rate")
    hidden_size: int = Field(32, gt=0, description="hidden units of the policy MLP")
    warmup_epochs: int = Field(
        1, ge=0, description="epochs of equal-weight KD before the policy selects (the paper's student pre-training)"
    )


class OnlineConfig(_Section):
    """Online KD: peers trained together, each taught by the aggregate of all (no pre-trained teacher)."""

    peers: int = Field(3, ge=2, description="number of peer students trained together")
    aggregate: Literal["mean", "learned", "mutual"] = Field(
        "mean",
        description="mean: average of the peers' logits; learned: a gate weighs the peers per example (OKDHP's "
        "aggregation unit); mutual: each peer learns from every other peer (DML)",
    )
    ensemble_weight: float = Field(1.0, ge=0, description="weight of the aggregate's own gold loss (learned gate)")
    rampup_epochs: float = Field(
        0.0, ge=0, description="KD weight ramps up as exp(-5 (1 - e/R)^2) over R epochs (OKDHP); 0: no ramp-up"
    )


class DistillConfig(_Section):
    method: Method = "vanilla"
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher term; 1 - alpha on gold labels")
    logit_loss: Literal["kl", "mse"] = "kl"
    logit_topk: int | None = Field(
        None, gt=0, description="keep only the teacher's k most likely classes (+ one bucket for the rest)"
    )
    matches: list[MatchConfig] = Field(default_factory=list)
    kbest: int = Field(5, gt=0, description="topk (word tasks): how many best teacher sequences teach the student")
    anneal_rate: float | None = Field(
        None,
        ge=0,
        description="teacher annealing (Wang et al. 2021 use 0.005): the teacher term's weight at epoch e is "
        "alpha * max(0, 1 - anneal_rate * e); word tasks",
    )
    alpha_schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="linear: the teacher term's weight falls from alpha to 0 over training, the student moving "
        "from teacher targets to gold labels (BAM teacher annealing, Clark et al. 2019)",
    )
    tau_max: int = Field(7, ge=1, description="annealing: first temperature of phase 1 (Jafari et al. use 7 on GLUE)")
    hard_epochs: int = Field(
        1, ge=0, description="annealing: epochs of phase 2 on gold labels, after train.epochs of phase 1"
    )
    teachers: list[str] = Field(
        default_factory=list,
        description="further teachers (folders or hub names) that teach the logit term together with teacher.model",
    )
    teacher_weights: Literal["equal", "fixed", "confidence", "learned"] = Field(
        "equal",
        description="how the teachers' KD terms are weighed per example: equal; fixed (distill.weights); confidence "
        "(each teacher's probability of the gold class); learned (a policy selects teachers, Yuan et al. 2021)",
    )
    weights: list[float] | None = Field(
        None, description="teacher_weights: fixed: one weight per teacher, teacher.model first"
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    online: OnlineConfig = Field(default_factory=OnlineConfig)
    stage_until: Literal["epochs", "plateau"] = "epochs"
    stage_epochs: int = Field(1, gt=0, description="epochs per layer stage (PID/SID); the cap when 'plateau'")
    plateau_patience: int = Field(1, gt=0)
    plateau_min_delta: float = Field(1e-3, ge=0, description="relative improvement of the dev stage loss")

    @model_validator(mode="after")
    def _matches_fit_method(self) -> DistillConfig:
        if self.method in ("internal", "pid", "sid") and not self.matches:
            raise ValueError(f"method {self.method!r} needs at least one entry in distill.matches")
        if self.method in ("none", "vanilla", "token", "topk", "structural", "annealing", "online") and self.matches:
            raise ValueError(
                f"method {self.method!r} ignores distill.matches; use method internal, pid or sid, or remove them"
            )
        return self

    @model_validator(mode="after")
    def _teacher_weights_fit(self) -> DistillConfig:
        if self.teacher_weights == "fixed":
            if self.weights is None or len(self.weights) != 1 + len(self.teachers):
                raise ValueError(
                    "teacher_weights: fixed needs distill.weights with one weight per teacher "
                    f"(teacher.model + {len(self.teachers)} in distill.teachers)"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("distill.weights must be non-negative with a positive sum")
        elif self.weights is not None:
            raise ValueError("distill.weights is read with teacher_weights: fixed only")
        if self.teachers and self.method not in ("vanilla", "internal", "pid", "sid"):
            raise ValueError(f"distill.teachers teach the logit term of vanilla/internal/pid/sid, not {self.method!r}")
        if self.teacher_weights != "equal" and not self.teachers:
            raise ValueError("teacher_weights other than equal needs further teachers in distill.teachers")
        return self

    @model_validator(mode="after")
    def _topk_is_for_kl(self) -> DistillConfig:
        if self.logit_topk is not None and self.logit_loss != "kl":
            raise ValueError("logit_topk compresses the teacher's distribution for logit_loss: kl only")
        if self.logit_topk is not None and self.method in ("annealing", "online"):
            raise ValueError(f"method {self.method!r} reads dense logits; remove logit_topk")
        return self

    @property
    def uses_attention(self) -> bool:
        """Whether the teacher must compute attention probabilities (attention losses or attention-ranked tokens)."""
        return any(m.is_attention or m.ranks_by_attention for m in self.matches)

    @property
    def student_uses_attention(self) -> bool:
        return any(m.is_attention for m in self.matches)


class TrainConfig(_Section):
    epochs: int = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps in total")
    batch_size: int = Field(32, gt=0, description="global batch (split across processes under DDP)")
    eval_batch_size: int = Field(128, gt=0)
    lr: float = Field(5e-5, gt=0)
    projection_lr: float = Field(1e-3, gt=0)
    head_lr: float | None = Field(
        None,
        gt=0,
        description="word tasks: learning rate of the model's task head (tagger, CRF, parser scorers) when it "
        "should differ from lr, e.g. a fresh head on a pretrained encoder",
    )
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    grad_accum_steps: int = Field(1, gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 42
    bucket_by_length: bool = True
    eval_every_steps: int | None = Field(None, gt=0, description="default: at the end of every epoch")
    checkpoint_every_steps: int | None = Field(500, gt=0)
    log_every_steps: int = Field(20, gt=0)
    tensorboard: bool = False
    progress_bar: bool = True


class CacheConfig(_Section):
    """Teacher knowledge stored once: `kdlab cache` writes it, `kdlab distill` then trains without the teacher."""

    dir: str | None = Field(None, description="the cache folder; when set, distill reads the teacher from it")
    dtype: Literal["float32", "float16"] = Field("float32", description="storage precision of features")
    shard_examples: int = Field(4096, gt=0, description="examples per shard file")
    verify: bool = Field(True, description="check every shard's sha256 before training")


TextField = Literal["text", "text_pair"]


class PerturbConfig(_Section):
    """Tang et al. (2019) style perturbations of training inputs; each word gets at most one of mask / replace /
    delete (one draw per word), then swaps, then n-gram sampling of the whole variant."""

    copies: int = Field(0, ge=0, description="perturbed variants per training example (Tang et al.'s n_iter; 0: off)")
    mask: float = Field(0.1, ge=0, le=1, description="per word: replace by the teacher's mask token")
    replace: float = Field(0.1, ge=0, le=1, description="per word: replace by a word drawn by training frequency")
    delete: float = Field(0.0, ge=0, le=1, description="per word: delete it")
    swap: float = Field(0.0, ge=0, le=1, description="per word: swap it with its right neighbour")
    ngram: float = Field(0.25, ge=0, le=1, description="per variant: keep only a random n-gram of each field")
    ngram_max: int = Field(5, gt=0, description="n-gram sampling draws n uniformly from 1..ngram_max")
    fields: list[TextField] | None = Field(
        None, description="which text fields are perturbed (default: all); e.g. [text_pair] = the translation only"
    )

    @model_validator(mode="after")
    def _one_draw_per_word(self) -> PerturbConfig:
        if self.mask + self.replace + self.delete > 1:
            raise ValueError("mask + replace + delete is a probability per word and must not exceed 1")
        return self


class PoolConfig(_Section):
    """Unlabelled inputs: a split of a ready task, or a file with the column mapping of task.* (labels unused)."""

    task: str | None = Field(None, description="a ready task whose split is used (its labels are ignored)")
    split: Literal["train", "dev"] = "train"
    path: str | None = Field(None, description="a TSV/CSV/JSONL file of inputs")
    format: Literal["tsv", "csv", "jsonl"] | None = None
    header: bool = True
    text: str | int | None = Field(None, description="column of the text (default: the task's)")
    text_pair: str | int | None = Field(None, description="column of the second text (default: the task's)")
    max_examples: int | None = Field(None, gt=0, description="keep a random subset of this size")

    @model_validator(mode="after")
    def _task_or_path(self) -> PoolConfig:
        if (self.task is None) == (self.path is None):
            raise ValueError("a pool is either a ready task (task: name) or a file (path: ...), not both or neither")
        return self


class AugmentConfig(_Section):
    """Extra training inputs labelled only by the teacher: unlabelled pools and perturbed training inputs."""

    pools: list[PoolConfig] = Field(default_factory=list)
    perturb: PerturbConfig = Field(default_factory=PerturbConfig)
    filter: Literal["none", "match_teacher"] = Field(
        "none",
        description="match_teacher: keep augmented inputs so that their teacher outputs are distributed "
        "like the teacher's outputs on the original training data",
    )
    filter_bins: int = Field(10, gt=1, description="match_teacher: quantile bins of a regression teacher's scores")
    max_examples: int | None = Field(None, gt=0, description="augmented examples kept in all (after the filter)")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _some_source(self) -> AugmentConfig:
        if not self.pools and self.perturb.copies == 0:
            raise ValueError("augment needs pools or perturb.copies > 0")
        return self


class AssistantConfig(_Section):
    """One hop of a teacher-assistant chain: the assistant, and optionally how this hop is distilled and trained."""

    student: StudentConfig
    distill: DistillConfig | None = Field(None, description="default: the recipe's distill section")
    train: TrainConfig | None = Field(None, description="default: the recipe's train section")


class MultitaskConfig(_Section):
    """Several tasks in one student: jointly (multi-task, BAM) or one after another (lifelong, L2KD)."""

    tasks: list[str] = Field(min_length=1, description="ready task names, in the order a lifelong run meets them")
    mode: Literal["joint", "sequential"] = Field(
        "sequential", description="joint: all tasks at once (multi-task); sequential: one task after another"
    )
    teachers: dict[str, str] = Field(
        default_factory=dict,
        description="task -> fine-tuned single-task teacher; a task without one gets a teacher fine-tuned from "
        "teacher.model by the run (distill.method none needs no teachers)",
    )
    teacher_epochs: int = Field(2, gt=0, description="epochs of fine-tuning for each teacher the run trains")
    replay: int = Field(
        0, ge=0, description="sequential: stored examples of each earlier task replayed with the new task (gold CE)"
    )
    max_train_examples: int | None = Field(None, gt=0, description="training examples kept per task")
    max_dev_examples: int | None = Field(None, gt=0, description="dev examples kept per task")


class OutputConfig(_Section):
    dir: str = "runs/kdlab"
    overwrite: bool = False


class Recipe(_Section):
    task: TaskConfig
    teacher: TeacherConfig
    student: StudentConfig = Field(default_factory=StudentConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    augment: AugmentConfig | None = None
    assistants: list[AssistantConfig] = Field(
        default_factory=list,
        description="teacher-assistant chain: teacher -> assistants[0] -> ... -> student, each hop a KD run",
    )
    multitask: MultitaskConfig | None = None
    output: OutputConfig = Field(default_factory=OutputConfig)


def load_recipe(source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe from a YAML file (or a dict), apply ``key=value`` overrides, and validate it."""
    if isinstance(source, dict):
        data = _deep_copy(source)
        origin = "recipe"
    else:
        data = _read_yaml(Path(source))
        origin = str(source)
    for override in overrides:
        _apply_override(data, override)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise _friendly(err, origin) from None
    teacher_free = recipe.cache.dir is not None and recipe.student.kind == "pretrained"
    if recipe.teacher.model is None and not teacher_free:
        raise UserError(
            f"invalid recipe {origin}: teacher.model must be a string naming the teacher",
            key="teacher.model",
            fix="give a model folder, hub name or 'minilm' (it may only be left out when training from cache.dir "
            "with student.kind: pretrained)",
        )
    return recipe


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"recipe file {str(path)!r} does not exist", key="RECIPE", fix="give the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {err}", key="RECIPE", fix="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of sections", key="RECIPE", fix="see configs/ for examples")
    return data


_INDEX = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<index>\d+)\])?$")


def _apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``a.b[2].c=value``; the value is parsed as YAML (numbers, booleans, lists), never executed."""
    if "=" not in override:
        raise UserError(f"override {override!r} has no '='", key="--set", fix="write --set section.key=value")
    dotted, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    parts = dotted.strip().split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        match = _INDEX.match(part)
        if not match:
            raise UserError(f"cannot parse {dotted!r}", key="--set", fix="write keys like distill.matches[0].weight")
        name, index = match["name"], match["index"]
        last = depth == len(parts) - 1
        if not isinstance(node, dict):
            raise UserError(f"{dotted!r}: {'.'.join(parts[:depth])} is not a section", key="--set")
        if index is None:
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
            continue
        items = node.get(name)
        if not isinstance(items, list) or int(index) >= len(items):
            raise UserError(f"{dotted!r}: {name} has no item {index}", key="--set", fix="index an existing list entry")
        if last:
            items[int(index)] = value
        else:
            node = items[int(index)]


def _friendly(err: ValidationError, origin: str) -> UserError:
    """Turn pydantic's report into one message per problem, each naming the key and how to fix it."""
    lines = []
    for problem in err.errors():
        key = _dotted(problem["loc"])
        if problem["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key{_did_you_mean(problem['loc'])}")
        elif problem["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            got = problem.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {message}{shown}")
    first_key = _dotted(err.errors()[0]["loc"]) if err.errors() else None
    return UserError(
        f"invalid recipe {origin}:\n  " + "\n  ".join(lines),
        key=first_key,
        fix="correct the key(s) above in the YAML or with --set; configs/ has a working recipe for every method",
    )


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "recipe"


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        inner = getattr(annotation, "__args__", (annotation,))
        nested = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is None:
            return ""
        model = nested
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=3)
    known = ", ".join(model.model_fields)
    return f"; did you mean {' or '.join(close)}?" if close else f"; known keys here: {known}"


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
