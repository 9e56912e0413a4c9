"""Word-level tasks end to end: teachers fine-tuned on a treebank, BiLSTM students distilled from them.

The teachers are a TINY random BERT encoder (2 layers, hidden 32) on the MiniLM vocabulary, fine-tuned for a
couple of epochs on the 40-sentence UD English-EWT excerpt in ``tests/fixtures/ud-ewt`` through the public API
(tagger heads softmax / CRF on UPOS and XPOS, a biaffine parser). They learn little, but every path a real run
takes is taken: labelling the training sentences once, the structural / token / top-k losses of every teacher and
student pairing, the teacher cache, low-resource gold, teacher annealing, the head learning rate, and the user
errors of word tasks. Teachers are trained once per module; students are 1-epoch BiLSTMs of width 16.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

import kdlab
from kdlab import cli
from kdlab.commands import runs
from kdlab.config import load_recipe
from kdlab.data.conllu import read_conllu
from kdlab.data.encoding import IGNORE_LABEL
from kdlab.data.tokens import TokenCollator, encode_words
from kdlab.data.treebank import has_gold, hide_gold, inventory, word_task
from kdlab.engine import trainer as trainer_module
from kdlab.methods.word_objective import WordObjective
from kdlab.models.vocab import build_word_tokenizer
from kdlab.models.words import WordParser, WordTagger, load_word_model, save_word_model, word_model_inputs

FIXTURES = Path(__file__).parent / "fixtures"
UD = FIXTURES / "ud-ewt"
TRAIN = UD / "train.conllu"
DEV = UD / "dev.conllu"

TRAIN_SETTINGS = {
    "epochs": 1,
    "batch_size": 8,
    "lr": 1e-2,
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "log_every_steps": 1,
    "checkpoint_every_steps": None,
    "progress_bar": False,
}
STUDENT = {"kind": "bilstm", "embedding_dim": 16, "lstm_hidden_size": 16, "lstm_layers": 1, "dropout": 0.0}


# ---------------------------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------------------------


def word_task_section(target: str, **extra: Any) -> dict[str, Any]:
    return {"format": "conllu", "train": str(TRAIN), "dev": str(DEV), "target": target, "max_length": 64, **extra}


def teacher_recipe(encoder: Path, target: str, head: str | None, out: Path, **train: Any) -> dict[str, Any]:
    teacher: dict[str, Any] = {"model": str(encoder)}
    if head is not None:
        teacher["head"] = head
    return {
        "task": word_task_section(target),
        "teacher": teacher,
        "train": {**TRAIN_SETTINGS, "epochs": 2, "lr": 2e-3, "head_lr": 1e-2, **train},
        "output": {"dir": str(out)},
    }


def student_recipe(
    teacher: Path | str,
    target: str,
    out: Path,
    method: str = "structural",
    head: str | None = None,
    task: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    student = dict(STUDENT)
    if head is not None:
        student["head"] = head
    recipe = {
        "task": word_task_section(target, **(task or {})),
        "teacher": {"model": str(teacher)},
        "student": student,
        "distill": {"method": method, "alpha": 0.5, "temperature": 1.0, "kbest": 3},
        "train": dict(TRAIN_SETTINGS),
        "output": {"dir": str(out)},
    }
    for name, value in sections.items():
        recipe[name] = {**recipe.get(name, {}), **value}
    return recipe


def train_records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == "train"]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def in_unit_interval(metrics: dict[str, float], names: tuple[str, ...]) -> None:
    for name in names:
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics)


TAG_METRICS = ("accuracy",)
PARSE_METRICS = ("las", "uas", "las_punct", "uas_punct")


# ---------------------------------------------------------------------------------------------------------------
# the tiny encoder and the teachers fine-tuned from it (once per module)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is as fast, and immune to the stalls of oversubscribed cores (a
    2-thread LSTM backward took seconds instead of milliseconds while another process kept one core busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sentences() -> tuple[list[Any], list[Any]]:
    return read_conllu(TRAIN, key="train"), read_conllu(DEV, key="dev")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer: Any) -> Path:
    """A random 2-layer BertModel (hidden 32, 2 heads, ffn 64) with the MiniLM vocabulary and full tokenizer."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(minilm_tokenizer),
        pad_token_id=minilm_tokenizer.pad_token_id,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("tiny_encoder")
    BertModel(config).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder


def _finetune(tmp_path_factory: pytest.TempPathFactory, encoder: Path, target: str, head: str | None) -> Path:
    out = tmp_path_factory.mktemp(f"teacher_{target}_{head}")
    run = kdlab.finetune(teacher_recipe(encoder, target, head, out))
    assert run.result.finished
    return run.model_dir


@pytest.fixture(scope="module")
def upos_crf(tmp_path_factory, encoder_dir) -> Path:
    return _finetune(tmp_path_factory, encoder_dir, "upos", "crf")


@pytest.fixture(scope="module")
def upos_softmax(tmp_path_factory, encoder_dir) -> Path:
    return _finetune(tmp_path_factory, encoder_dir, "upos", "softmax")


@pytest.fixture(scope="module")
def xpos_crf(tmp_path_factory, encoder_dir) -> Path:
    return _finetune(tmp_path_factory, encoder_dir, "xpos", "crf")


@pytest.fixture(scope="module")
def deps(tmp_path_factory, encoder_dir) -> Path:
    return _finetune(tmp_path_factory, encoder_dir, "deps", None)


# ---------------------------------------------------------------------------------------------------------------
# 1. teachers
# ---------------------------------------------------------------------------------------------------------------

TEACHERS = [
    # fixture, target, head
    ("upos_softmax", "upos", "softmax"),
    ("upos_crf", "upos", "crf"),
    ("xpos_crf", "xpos", "crf"),
    ("deps", "deps", None),
]


@pytest.mark.parametrize(("fixture", "target", "head"), TEACHERS)
def test_finetuned_teacher_is_a_word_model_with_the_task_inventory(
    request: pytest.FixtureRequest, sentences, fixture: str, target: str, head: str | None
) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    model, tokenizer = load_word_model(model_dir)
    train, dev = sentences
    field = "deprels" if target == "deps" else target
    names = inventory(train + dev, field, "task.train")
    assert {int(i): name for i, name in model.config.id2label.items()} == dict(enumerate(names))
    assert model.config.encoder == "transformer"
    if target == "deps":
        assert isinstance(model, WordParser)
        assert model.config.num_rels == len(names)
    else:
        assert isinstance(model, WordTagger)
        assert model.config.head == head and model.config.field == target
        assert (getattr(model, "transitions", None) is not None) == (head == "crf")
    assert len(tokenizer) > 10_000  # the teacher's full subword vocabulary came along

    evaluation = kdlab.evaluate(teacher_recipe(model_dir, target, head, model_dir.parent), model=str(model_dir))
    expected = PARSE_METRICS if target == "deps" else TAG_METRICS
    assert set(expected) <= set(evaluation.metrics)
    in_unit_interval(evaluation.metrics, expected)
    assert evaluation.parameters == sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# 2. every teacher / student / method pairing trains, and its student reloads
# ---------------------------------------------------------------------------------------------------------------

DISTILL_CASES = [
    # id, teacher fixture, task target, student head, method
    ("crf-to-crf", "upos_crf", "upos", "crf", "structural"),
    ("crf-to-softmax", "upos_crf", "upos", "softmax", "structural"),
    ("softmax-to-crf", "upos_softmax", "upos", "crf", "structural"),
    ("xpos-to-upos-crf-structural", "xpos_crf", "upos", "crf", "structural"),
    ("xpos-to-upos-softmax-structural", "xpos_crf", "upos", "softmax", "structural"),
    ("xpos-to-upos-token", "xpos_crf", "upos", "crf", "token"),
    ("xpos-to-upos-topk", "xpos_crf", "upos", "crf", "topk"),
    ("crf-token", "upos_crf", "upos", "crf", "token"),
    ("crf-topk", "upos_crf", "upos", "crf", "topk"),
    ("crf-none", "upos_crf", "upos", "crf", "none"),
    ("deps-structural", "deps", "deps", None, "structural"),
    ("deps-token", "deps", "deps", None, "token"),
    ("deps-none", "deps", "deps", None, "none"),
]


@pytest.mark.parametrize(
    ("teacher_fixture", "target", "head", "method"), [c[1:] for c in DISTILL_CASES], ids=[c[0] for c in DISTILL_CASES]
)
def test_distill_trains_and_saves_a_reloadable_student(
    request: pytest.FixtureRequest, tmp_path: Path, sentences, teacher_fixture: str, target: str, head, method: str
) -> None:
    teacher: Path = request.getfixturevalue(teacher_fixture)
    recipe = student_recipe(teacher, target, tmp_path / "run", method=method, head=head)
    run = kdlab.distill(recipe)
    assert run.result.finished and run.result.global_step > 0
    assert run.extra["train_sentences"] == 40 and run.extra["gold_sentences"] == 40
    in_unit_interval(run.result.dev_metrics, PARSE_METRICS if target == "deps" else TAG_METRICS)

    records = train_records(run.output_dir)
    assert records, "nothing was logged"
    for record in records:
        assert all(torch.isfinite(torch.tensor(v)) for k, v in record.items() if isinstance(v, float)), record
        # alpha 0.5: gold and KD both weigh in (method none: gold only)
        assert ("kd" in record) == (method != "none") and "gold" in record, record

    model, tokenizer = load_word_model(run.model_dir)
    train, dev = sentences
    assert model.config.encoder == "bilstm"
    if target == "deps":
        assert isinstance(model, WordParser)
        names = inventory(train + dev, "deprels", "task.train")
    else:
        assert isinstance(model, WordTagger)
        assert model.config.head == head and model.config.field == "upos"
        assert (getattr(model, "transitions", None) is not None) == (head == "crf")
        # case 4 included: the student predicts the task's UPOS, whatever its teacher tags
        names = inventory(train + dev, "upos", "task.train")
    assert [model.config.id2label[i] for i in range(len(names))] == list(names)

    # the saved tokenizer is the student's own word vocabulary, built from the training sentences
    built = build_word_tokenizer([" ".join(s.words) for s in train], extra_specials=())
    assert len(tokenizer) == len(built) < 2000
    for sentence in train[:5] + dev[:5]:
        encoded = tokenizer(sentence.words, is_split_into_words=True)["input_ids"]
        assert encoded == built(sentence.words, is_split_into_words=True)["input_ids"]
    the = tokenizer("the", add_special_tokens=False)["input_ids"]
    assert the == [tokenizer.convert_tokens_to_ids("the")] and the != [tokenizer.unk_token_id]

    # the reloaded student reads its own tokenisation of dev sentences and decodes one prediction per word
    fields = word_task(load_recipe(recipe).task).fields
    labels = [field for field in fields if field != "heads"]
    ids = {field: {name: i for i, name in enumerate(inventory(train + dev, field, "k"))} for field in labels}
    batch = TokenCollator(tokenizer.pad_token_id, fields)(encode_words(dev[:4], tokenizer, 64, fields, ids))
    with torch.no_grad():
        decoded = model.decode(model(**word_model_inputs(batch)), batch["word_mask"])
    first = decoded[0] if isinstance(decoded, tuple) else decoded
    assert torch.equal(first != IGNORE_LABEL, batch["word_mask"].bool())


# ---------------------------------------------------------------------------------------------------------------
# 3. the KD term really reads the teacher
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_crf_teacher(tmp_path_factory, upos_crf: Path) -> Path:
    """The trained CRF teacher with a different (random) head: same encoder, same labels, other potentials."""
    model, tokenizer = load_word_model(upos_crf)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in (model.classifier.weight, model.classifier.bias, model.transitions, model.start, model.end):
            param.copy_(torch.randn(param.shape, generator=generator))
    folder = tmp_path_factory.mktemp("other_crf_teacher") / "model"
    save_word_model(model, tokenizer, folder)
    return folder


def test_kd_only_students_of_different_teachers_differ(tmp_path: Path, upos_crf: Path, other_crf_teacher: Path):
    def kd_only(teacher: Path, name: str) -> dict[str, torch.Tensor]:
        recipe = student_recipe(teacher, "upos", tmp_path / name, head="crf", distill={"alpha": 1.0})
        run = kdlab.distill(recipe)
        assert all("gold" not in r and "kd" in r for r in train_records(run.output_dir))
        return weights(run.model_dir)

    first, again, other = kd_only(upos_crf, "a"), kd_only(upos_crf, "b"), kd_only(other_crf_teacher, "c")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first), "the same teacher must give the same student"
    assert any(not torch.equal(first[k], other[k]) for k in first), "the student ignores its teacher"


@pytest.mark.parametrize(("teacher_fixture", "target", "head"), [("upos_crf", "upos", "crf"), ("deps", "deps", None)])
def test_kd_only_structural_training_lowers_the_kd_term(
    request: pytest.FixtureRequest, tmp_path: Path, teacher_fixture: str, target: str, head: str | None
) -> None:
    # One batch holds the whole training set, so every logged KD value is measured on the same sentences.
    teacher = request.getfixturevalue(teacher_fixture)
    train = {"epochs": 8, "batch_size": 64, "lr": 2e-2}
    recipe = student_recipe(teacher, target, tmp_path / "run", head=head, distill={"alpha": 1.0}, train=train)
    run = kdlab.distill(recipe)
    kd = [r["kd"] for r in train_records(run.output_dir)]
    assert len(kd) == 8
    assert kd[-1] < 0.75 * kd[0], kd


# ---------------------------------------------------------------------------------------------------------------
# 4. the teacher cache
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("teacher_fixture", "target", "head"), [("upos_crf", "upos", "crf"), ("deps", "deps", None)])
def test_distill_from_the_cache_equals_distill_from_the_teacher(
    request: pytest.FixtureRequest, tmp_path: Path, teacher_fixture: str, target: str, head: str | None
) -> None:
    teacher = request.getfixturevalue(teacher_fixture)
    live = kdlab.distill(student_recipe(teacher, target, tmp_path / "live", head=head))
    cached_recipe = student_recipe(teacher, target, tmp_path / "cached", head=head, cache={"dir": str(tmp_path / "c")})
    summary = kdlab.cache(cached_recipe, overwrite=True, progress=False)
    assert summary.examples == 40 and (tmp_path / "c" / "manifest.json").is_file()

    def no_teacher(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the teacher was loaded although cache.dir holds its outputs")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kdlab.commands.words.load_word_model", no_teacher)
        cached = kdlab.distill(cached_recipe)
    assert cached.result.dev_metrics == live.result.dev_metrics
    a, b = weights(live.model_dir), weights(cached.model_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Cli:
    """``kdlab ARGS`` in this process (as test_user_errors does), in a tmp folder that must stay untouched."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
        self.root, self.monkeypatch, self.capsys = root, monkeypatch, capsys
        monkeypatch.chdir(root)

    def write(self, recipe: dict[str, Any]) -> str:
        path = self.root / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return str(path)

    def fails(self, key: str, *args: str, says: tuple[str, ...] = ()) -> str:
        """Exit status 2, one ``error:`` naming ``key`` with a fix, no traceback, no training, nothing written."""

        def no_work(*a: Any, **k: Any) -> Any:
            raise AssertionError("training started although the input is wrong")

        self.monkeypatch.setattr(runs, "Trainer", no_work)
        self.monkeypatch.setattr("kdlab.commands.words.Trainer", no_work, raising=True)
        before = _snapshot(self.root)
        self.monkeypatch.setattr(sys, "argv", ["kdlab", *args])
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        out, err = self.capsys.readouterr()
        assert exit_info.value.code == 2, err
        assert "Traceback" not in err and err.startswith("error:") and err.count("error:") == 1, err
        assert key in err, f"{key!r} not named in:\n{err}"
        assert "fix: " in err, err
        for fragment in says:
            assert fragment in err, f"{fragment!r} not in:\n{err}"
        assert out == ""
        assert _snapshot(self.root) == before, "files were written, changed or removed"
        assert not (self.root / "out").exists()
        return err


def _snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    return {
        str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def cli_scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Cli:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Cli(tmp_path, monkeypatch, capsys)


def test_a_cache_of_other_sentences_is_refused(cli_scene: Cli, upos_crf: Path) -> None:
    root = cli_scene.root
    cache = {"dir": str(root / "cache")}
    kdlab.cache(
        student_recipe(upos_crf, "upos", root / "out", head="crf", task={"max_train_examples": 20}, cache=cache),
        overwrite=True,
        progress=False,
    )
    recipe = student_recipe(upos_crf, "upos", root / "out", head="crf", cache=cache)
    cli_scene.fails("cache.dir", "distill", cli_scene.write(recipe), says=("not in the cache",))


def test_a_parser_cache_is_refused_for_a_tagging_student(cli_scene: Cli, deps: Path, upos_crf: Path) -> None:
    root = cli_scene.root
    cache = {"dir": str(root / "cache")}
    kdlab.cache(student_recipe(deps, "deps", root / "out", cache=cache), overwrite=True, progress=False)
    recipe = student_recipe(upos_crf, "upos", root / "out", head="crf", cache=cache)
    cli_scene.fails("cache.dir", "distill", cli_scene.write(recipe), says=("parser",))


# ---------------------------------------------------------------------------------------------------------------
# 5. low-resource gold
# ---------------------------------------------------------------------------------------------------------------


def test_gold_fraction_keeps_the_hashed_share_and_none_trains_on_it_only(tmp_path: Path, sentences, upos_crf: Path):
    train, _ = sentences
    gold = sum(has_gold(s, 0.25) for s in train)
    assert 0 < gold < len(train)
    task = {"gold_fraction": 0.25}
    taught = kdlab.distill(student_recipe(upos_crf, "upos", tmp_path / "kd", head="crf", task=task))
    assert taught.extra == {"train_sentences": len(train), "gold_sentences": gold}
    alone = kdlab.distill(student_recipe(upos_crf, "upos", tmp_path / "none", method="none", head="crf", task=task))
    assert alone.extra == {"train_sentences": gold, "gold_sentences": gold}
    # finetune also trains on the labelled share only
    recipe = teacher_recipe(upos_crf, "upos", None, tmp_path / "ft", max_steps=1)
    recipe["task"] = word_task_section("upos", **task)
    teacher = kdlab.finetune(recipe)
    assert teacher.extra == {"train_sentences": gold}


def test_gold_hiding_is_deterministic_and_by_content(sentences) -> None:
    train, _ = sentences
    recipe = {"task": word_task_section("upos", gold_fraction=0.25), "teacher": {"model": "x"}}
    task = word_task(load_recipe(recipe).task)
    tokenizer = build_word_tokenizer([" ".join(s.words) for s in train], extra_specials=())
    ids = {"upos": {name: i for i, name in enumerate(inventory(train, "upos", "k"))}}

    def hidden(order: list[Any]) -> dict[tuple[str, ...], list[int]]:
        items = encode_words(order, tokenizer, 64, task.fields, ids)
        kept = hide_gold(items, order, task)
        assert kept == sum(has_gold(s, 0.25) for s in train)
        return {tuple(s.words): item["upos"] for s, item in zip(order, items, strict=True)}

    first, again, reversed_order = hidden(train), hidden(train), hidden(train[::-1])
    assert first == again == reversed_order
    unlabelled = [labels for labels in first.values() if all(y == IGNORE_LABEL for y in labels)]
    assert len(unlabelled) == len(train) - sum(has_gold(s, 0.25) for s in train)
    assert all(has_gold(s, 1.0) for s in train) and has_gold(train[0], None)


# ---------------------------------------------------------------------------------------------------------------
# 6. user errors of word tasks
# ---------------------------------------------------------------------------------------------------------------


def test_sentence_method_on_a_word_task(cli_scene: Cli, upos_crf: Path) -> None:
    recipe = student_recipe(upos_crf, "upos", cli_scene.root / "out", method="vanilla", head="crf")
    cli_scene.fails("distill.method", "distill", cli_scene.write(recipe), says=("'vanilla'",))


def test_shrink_student_on_a_word_task(cli_scene: Cli, upos_crf: Path) -> None:
    recipe = student_recipe(upos_crf, "upos", cli_scene.root / "out")
    recipe["student"] = {"kind": "shrink"}
    cli_scene.fails("student.kind", "distill", cli_scene.write(recipe), says=("BiLSTM",))


def test_topk_on_parsing(cli_scene: Cli, deps: Path) -> None:
    recipe = student_recipe(deps, "deps", cli_scene.root / "out", method="topk")
    cli_scene.fails("distill.method", "distill", cli_scene.write(recipe), says=("topk",))


def test_sentence_classifier_as_a_word_teacher(cli_scene: Cli, tiny_teacher_dir: Path) -> None:
    recipe = student_recipe(tiny_teacher_dir, "upos", cli_scene.root / "out", head="crf")
    cli_scene.fails("teacher.model", "distill", cli_scene.write(recipe), says=("not a trained word model",))


def test_tagger_teacher_on_a_parsing_task(cli_scene: Cli, upos_crf: Path) -> None:
    recipe = student_recipe(upos_crf, "deps", cli_scene.root / "out")
    cli_scene.fails("teacher.model", "distill", cli_scene.write(recipe), says=("is a tagger",))


def test_parser_teacher_on_a_tagging_task(cli_scene: Cli, deps: Path) -> None:
    recipe = student_recipe(deps, "upos", cli_scene.root / "out", head="crf")
    cli_scene.fails("teacher.model", "distill", cli_scene.write(recipe), says=("is a parser",))


def test_student_head_on_a_parsing_task_without_a_teacher(cli_scene: Cli, deps: Path) -> None:
    recipe = student_recipe(deps, "deps", cli_scene.root / "out", method="none", head="crf")
    cli_scene.fails("student.head", "distill", cli_scene.write(recipe), says=("head-selection",))


def test_a_tagger_of_another_column_cannot_be_evaluated_or_finetuned_on_this_one(
    cli_scene: Cli, xpos_crf: Path
) -> None:
    recipe = student_recipe(xpos_crf, "upos", cli_scene.root / "out", head="crf")
    path = cli_scene.write(recipe)
    cli_scene.fails("--model", "evaluate", path, "--model", str(xpos_crf), says=("tags xpos", "predicts upos"))
    finetune = teacher_recipe(xpos_crf, "upos", None, cli_scene.root / "out")
    cli_scene.fails("teacher.model", "finetune", cli_scene.write(finetune), says=("tags xpos",))


def test_a_saved_tagger_keeps_its_head(cli_scene: Cli, upos_crf: Path) -> None:
    recipe = teacher_recipe(upos_crf, "upos", "softmax", cli_scene.root / "out")
    cli_scene.fails("teacher.head", "finetune", cli_scene.write(recipe), says=("cannot become 'softmax'",))


def sentence_recipe(teacher: Path, out: Path) -> dict[str, Any]:
    return {
        "task": {"name": "sst2-sample", "max_length": 32, "max_train_examples": 16},
        "teacher": {"model": str(teacher)},
        "student": {"kind": "shrink", "layers": [1, 3]},
        "distill": {"method": "vanilla"},
        "train": {"epochs": 1, "max_steps": 1, "batch_size": 8, "progress_bar": False},
        "output": {"dir": str(out)},
    }


def test_student_head_on_a_sentence_task(cli_scene: Cli, tiny_teacher_dir: Path) -> None:
    recipe = sentence_recipe(tiny_teacher_dir, cli_scene.root / "out")
    recipe["student"]["head"] = "crf"
    cli_scene.fails("student.head", "distill", cli_scene.write(recipe), says=("word-level",))


def test_head_lr_on_a_sentence_task(cli_scene: Cli, tiny_teacher_dir: Path) -> None:
    recipe = sentence_recipe(tiny_teacher_dir, cli_scene.root / "out")
    del recipe["student"], recipe["distill"]
    recipe["train"]["head_lr"] = 1e-3
    cli_scene.fails("train.head_lr", "finetune", cli_scene.write(recipe), says=("word-level",))


@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_missing_conllu_file(cli_scene: Cli, encoder_dir: Path, upos_crf: Path, command: str) -> None:
    root = cli_scene.root
    if command == "finetune":
        recipe = teacher_recipe(encoder_dir, "upos", "crf", root / "out")
    else:
        recipe = student_recipe(upos_crf, "upos", root / "out", head="crf")
    missing = root / "data" / "train.conllu"
    recipe["task"]["train"] = str(missing)
    cli_scene.fails("task.train", command, cli_scene.write(recipe), says=(str(missing), "does not exist"))


def test_conllu_without_target_is_a_schema_error(cli_scene: Cli, encoder_dir: Path) -> None:
    recipe = teacher_recipe(encoder_dir, "upos", "crf", cli_scene.root / "out")
    del recipe["task"]["target"]
    cli_scene.fails("task", "finetune", cli_scene.write(recipe), says=("task.target", "invalid recipe"))


# ---------------------------------------------------------------------------------------------------------------
# 7. teacher annealing
# ---------------------------------------------------------------------------------------------------------------


def test_annealed_lambda_per_epoch() -> None:
    objective = WordObjective("structural", alpha=0.5, anneal_rate=0.5)
    seen = []
    for epoch in range(4):
        objective.start_epoch(epoch)
        seen.append(objective.lam)
    assert seen == [0.5, 0.25, 0.0, 0.0]
    plain = WordObjective("structural", alpha=0.5)
    plain.start_epoch(9)
    assert plain.lam == 0.5
    assert WordObjective("none", alpha=0.5).lam == 0.0


def test_annealed_run_drops_the_kd_term_in_its_last_epoch(tmp_path: Path, upos_crf: Path) -> None:
    recipe = student_recipe(
        upos_crf, "upos", tmp_path / "run", head="crf", distill={"anneal_rate": 0.5}, train={"epochs": 3}
    )
    run = kdlab.distill(recipe)
    assert run.result.finished
    steps_per_epoch, rest = divmod(run.result.global_step, 3)
    assert rest == 0 and steps_per_epoch > 0
    records = train_records(run.output_dir)
    assert [r["step"] for r in records] == list(range(1, run.result.global_step + 1))
    for record in records:
        epoch = (record["step"] - 1) // steps_per_epoch
        assert "gold" in record
        assert ("kd" in record) == (epoch < 2), record  # lambda = 0.5, 0.25, then 0: no KD term at all


# ---------------------------------------------------------------------------------------------------------------
# 8. the head learning rate
# ---------------------------------------------------------------------------------------------------------------


def test_head_parameters_are_everything_but_the_encoder(encoder_dir: Path) -> None:
    labels = {"num_labels": 3, "id2label": {0: "A", 1: "B", 2: "C"}}
    tagger = WordTagger.from_encoder(encoder_dir, head="crf", field="upos", **labels)
    names = tagger.head_parameter_names()
    assert set(names) == {"classifier.weight", "classifier.bias", "transitions", "start", "end"}
    parser = WordParser.from_encoder(encoder_dir, **labels)
    names = set(parser.head_parameter_names())
    assert not any(n.startswith("encoder.") for n in names)
    assert {"root", "arc_scorer.weight", "rel_scorer.weight"} <= names
    everything = {n for n, _ in parser.named_parameters()}
    assert names == {n for n in everything if not n.startswith("encoder.")}


def test_finetune_trains_the_head_at_head_lr(tmp_path: Path, encoder_dir: Path, monkeypatch) -> None:
    captured: dict[str, Any] = {}
    original = trainer_module.Trainer._param_groups

    def spy(self: Any) -> list[dict[str, Any]]:
        groups = original(self)
        captured["groups"], captured["model"] = groups, self.job.student
        return groups

    monkeypatch.setattr(trainer_module.Trainer, "_param_groups", spy)
    recipe = teacher_recipe(encoder_dir, "upos", "crf", tmp_path / "run", lr=1e-3, head_lr=7e-3, max_steps=2)
    run = kdlab.finetune(recipe)
    assert run.result.global_step == 2 and len(train_records(run.output_dir)) == 2
    model = captured["model"]
    head_ids = {id(p) for n, p in model.named_parameters() if n in set(model.head_parameter_names())}
    head_groups = [g for g in captured["groups"] if g.get("lr") == 7e-3]
    assert len(head_groups) == 1 and {id(p) for p in head_groups[0]["params"]} == head_ids
    others = {id(p) for g in captured["groups"] if g is not head_groups[0] for p in g["params"]}
    assert others and not others & head_ids
    assert all(n.startswith("encoder.") for n, p in model.named_parameters() if id(p) in others)


def test_inspect_lists_the_modules_of_a_word_model(upos_crf: Path, deps: Path) -> None:
    from kdlab.commands.inspect import inspect_model

    rows, net = inspect_model(str(upos_crf), "Distillation keeps the tags")
    by_path = {row.path: row for row in rows}
    assert by_path["classifier"].output_shapes == ((1, 4, net.config.num_labels),)
    rows, net = inspect_model(str(deps))
    assert {"arc_scorer", "rel_scorer"} <= {row.path for row in rows}
