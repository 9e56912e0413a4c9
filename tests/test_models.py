"""Teachers (resolve/load), shrink, the BiLSTM student, saving and inspection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import load_without_kdlab
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from kdlab.errors import UserError
from kdlab.models import (
    ALIASES,
    BiLSTMForSequenceClassification,
    bilstm_from_teacher,
    check_tokenizer_round_trip,
    describe,
    find_layer_lists,
    layer_list_path,
    load_classifier,
    load_tokenizer,
    parameter_count,
    parse_keep_layers,
    render_table,
    resolve_model,
    save_student,
    shrink,
)

SENTENCES = ["a gripping, funny film", "the plot never quite comes together, sadly", "meh"]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    model, tokenizer = load_classifier(tiny_teacher_dir, num_labels=2)
    return model, tokenizer


@pytest.fixture(scope="module")
def batch(teacher):
    _, tokenizer = teacher
    return dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))


def logits_of(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


# ------------------------------------------------------------------------------------------------------------
# resolve_model / load_classifier / load_tokenizer
# ------------------------------------------------------------------------------------------------------------


def test_resolve_alias(minilm_path):
    assert "minilm" in ALIASES
    assert Path(resolve_model("minilm")) == minilm_path
    assert Path(resolve_model(" MiniLM ")) == minilm_path


def test_resolve_local_folder(tiny_teacher_dir, monkeypatch):
    assert resolve_model(tiny_teacher_dir) == str(tiny_teacher_dir.resolve())
    monkeypatch.chdir(tiny_teacher_dir.parent)
    assert resolve_model(f"./{tiny_teacher_dir.name}") == str(tiny_teacher_dir.resolve())


def test_resolve_folder_without_config(tmp_path):
    with pytest.raises(UserError, match=r"no config\.json") as err:
        resolve_model(tmp_path, key="student.model")
    assert err.value.key == "student.model"
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        resolve_model(tmp_path / "weights.bin")


@pytest.mark.parametrize("name", ["./no/such/model", "/definitely/not/here", "~/kdlab-missing-xyz", "a/b/c"])
def test_resolve_missing_path(name):
    with pytest.raises(UserError, match="no such folder") as err:
        resolve_model(name)
    assert err.value.key == "teacher.model"
    assert err.value.fix


def test_resolve_hub_name_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="offline") as err:
        resolve_model("google-bert/bert-base-uncased", key="teacher.model")
    assert err.value.key == "teacher.model"
    assert "minilm" in err.value.fix and "local" in err.value.fix
    # Online, a hub name passes through untouched (nothing is downloaded here).
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert resolve_model("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert resolve_model("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(UserError, match="valid hub name"):
        resolve_model("bad name!")


def test_load_classifier_checkpoint_with_head(teacher, tiny_teacher_dir):
    model, tokenizer = teacher
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_labels == 2
    assert model.config.problem_type == "single_label_classification"
    assert len(tokenizer) == 30522
    with pytest.raises(UserError, match="2 outputs, but the task has 3") as err:
        load_classifier(tiny_teacher_dir, num_labels=3, key="teacher.model")
    assert err.value.key == "teacher.model"


def test_load_classifier_regression(tiny_regressor_dir):
    model, _ = load_classifier(tiny_regressor_dir, num_labels=1, regression=True)
    assert model.config.problem_type == "regression"
    assert model.config.num_labels == 1
    with pytest.raises(UserError, match="regression"):
        load_classifier(tiny_regressor_dir, num_labels=1, regression=False)


def test_load_classifier_base_model_gets_fresh_head(minilm_path, capfd):
    model, tokenizer = load_classifier("minilm", num_labels=3, attn_implementation="eager", id2label=["a", "b", "c"])
    assert model.classifier.out_features == 3
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert model.config._attn_implementation == "eager"
    assert len(tokenizer) == 30522
    assert "LOAD REPORT" not in capfd.readouterr().err  # transformers' load noise is silenced


def test_load_tokenizer_refuses_config_only_folder(tiny_teacher_dir, tmp_path):
    shutil.copy(tiny_teacher_dir / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    with pytest.raises(UserError, match=r"only 5 tokens|no vocabulary|could not load") as err:
        load_tokenizer(tmp_path, key="teacher.model")
    assert err.value.key == "teacher.model"
    assert len(load_tokenizer(tiny_teacher_dir)) == 30522


# ------------------------------------------------------------------------------------------------------------
# shrink
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "n", "expected"),
    [
        ("every_other", 6, [1, 3, 5]),
        ("every_other", 4, [1, 3]),
        ("every_other", 5, [0, 2, 4]),
        ("bottom:2", 6, [0, 1]),
        ("top:2", 6, [4, 5]),
        ("uniform:3", 6, [1, 3, 5]),
        ("uniform:4", 12, [2, 5, 8, 11]),
        ("uniform:6", 6, [0, 1, 2, 3, 4, 5]),
        ("uniform:1", 6, [5]),
        ("0, 2,4", 6, [0, 2, 4]),
        ("all", 3, [0, 1, 2]),
        ([3, 1], 4, [3, 1]),
    ],
)
def test_parse_keep_layers(spec, n, expected):
    assert parse_keep_layers(spec, n) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ([0, 0], "more than once"),
        ([4], "do not exist"),
        ([-1], "do not exist"),
        ("top:9", "asks for 9"),
        ("uniform:0", "asks for 0"),
        ("middle:2", "unknown layer selection"),
        ([], "no layers"),
    ],
)
def test_parse_keep_layers_errors(spec, match):
    with pytest.raises(UserError, match=match) as err:
        parse_keep_layers(spec, 4)
    assert err.value.key == "student.layers"


def test_find_layer_list(teacher):
    model, _ = teacher
    assert find_layer_lists(model) == ["bert.encoder.layer"]
    assert layer_list_path(model) == "bert.encoder.layer"


def test_shrink_copies_weights_exactly(teacher):
    model, _ = teacher
    keep = [0, 2, 3]
    student = shrink(model, keep)
    assert type(student) is type(model)
    assert student.config.num_hidden_layers == 3
    assert model.config.num_hidden_layers == 4  # the teacher's config is untouched
    for i, j in enumerate(keep):
        s_state = student.bert.encoder.layer[i].state_dict()
        t_state = model.bert.encoder.layer[j].state_dict()
        assert s_state.keys() == t_state.keys()
        assert all(torch.equal(s_state[k], t_state[k]) for k in s_state)
    for part in ("bert.embeddings", "bert.pooler", "classifier"):
        s_state = student.get_submodule(part).state_dict()
        t_state = model.get_submodule(part).state_dict()
        assert all(torch.equal(s_state[k], t_state[k]) for k in t_state)
    # a real copy, not shared storage: training the student must not move the teacher
    assert student.classifier.weight.data_ptr() != model.classifier.weight.data_ptr()


def test_shrink_keeping_all_layers_reproduces_teacher(teacher, batch):
    model, _ = teacher
    student = shrink(model, "all")
    assert torch.equal(logits_of(student, batch), logits_of(model, batch))
    assert not torch.equal(logits_of(shrink(model, "top:2"), batch), logits_of(model, batch))


def test_shrink_smaller_hidden_size(teacher, batch):
    model, _ = teacher
    student = shrink(model, "bottom:2", hidden_size=16)
    assert (student.config.hidden_size, student.config.num_attention_heads) == (16, 4)
    assert student.config.intermediate_size == 32  # the teacher's 2x expansion ratio is kept
    assert logits_of(student, batch).shape == (3, 2)
    assert parameter_count(student) < parameter_count(model)
    assert student.bert.embeddings.word_embeddings.weight.shape == (30522, 16)  # random init: nothing fits
    with pytest.raises(UserError, match="attention heads") as err:
        shrink(model, "bottom:2", hidden_size=30)
    assert err.value.key == "student.hidden_size"
    explicit = shrink(model, [1], hidden_size=24, num_attention_heads=3, intermediate_size=48)
    assert (explicit.config.num_attention_heads, explicit.config.intermediate_size) == (3, 48)


def test_shrink_is_generic_over_bert_like_models(batch):
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=3, n_heads=4, hidden_dim=64, num_labels=2)
    teacher = DistilBertForSequenceClassification(config).eval()
    student = shrink(teacher, [0, 2])
    assert find_layer_lists(teacher) == ["distilbert.transformer.layer"]
    t_state = teacher.distilbert.transformer.layer[2].state_dict()
    s_state = student.distilbert.transformer.layer[1].state_dict()
    assert all(torch.equal(s_state[k], t_state[k]) for k in t_state)
    inputs = {k: v for k, v in batch.items() if k != "token_type_ids"}
    assert torch.equal(logits_of(shrink(teacher, "all"), inputs), logits_of(teacher, inputs))


# ------------------------------------------------------------------------------------------------------------
# saving
# ------------------------------------------------------------------------------------------------------------


def test_save_student_loads_with_plain_transformers(teacher, batch, tmp_path):
    model, tokenizer = teacher
    student = shrink(model, [1, 3])
    target = tmp_path / "student"
    save_student(student, tokenizer, target)
    save_student(student, tokenizer, target)  # replacing an existing folder works too
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind

    loaded = AutoModelForSequenceClassification.from_pretrained(target)
    assert torch.allclose(logits_of(loaded, batch), logits_of(student, batch), atol=1e-6)
    reloaded = AutoTokenizer.from_pretrained(target)
    assert len(reloaded) == len(tokenizer) == 30522
    for sentence in [*SENTENCES, "Unbelievably over-engineered tokenisation!"]:
        assert reloaded(sentence)["input_ids"] == tokenizer(sentence)["input_ids"]


class _TokenizerThatLosesItsVocabulary:
    """Wraps a tokenizer whose save_pretrained forgets tokenizer.json (the transformers-5 trap)."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def __len__(self):
        return len(self._tokenizer)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def save_pretrained(self, folder):
        files = self._tokenizer.save_pretrained(folder)
        for name in ("tokenizer.json", "vocab.txt"):
            Path(folder, name).unlink(missing_ok=True)
        return files


def test_save_student_refuses_a_broken_tokenizer(teacher, tmp_path):
    model, tokenizer = teacher
    with pytest.raises(RuntimeError, match="tokenizer"):
        save_student(shrink(model, [0]), _TokenizerThatLosesItsVocabulary(tokenizer), tmp_path / "student")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    (tmp_path / "only_config").mkdir()
    shutil.copy(Path(resolve_model("minilm")) / "tokenizer_config.json", tmp_path / "only_config")
    with pytest.raises(RuntimeError):
        check_tokenizer_round_trip(tokenizer, tmp_path / "only_config")


# ------------------------------------------------------------------------------------------------------------
# BiLSTM student
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bilstm(teacher):
    model, tokenizer = teacher
    torch.manual_seed(0)
    return bilstm_from_teacher(model, tokenizer, hidden_size=16, num_layers=2).eval()


def test_bilstm_from_teacher(teacher, bilstm, batch):
    model, tokenizer = teacher
    assert torch.equal(bilstm.embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    assert bilstm.config.embedding_dim == 32
    assert bilstm.config.pad_token_id == tokenizer.pad_token_id
    assert bilstm.config.num_labels == 2
    assert isinstance(bilstm.encoder, torch.nn.LSTM)
    out = bilstm(**batch, labels=torch.tensor([0, 1, 1]))  # token_type_ids in the batch are ignored
    assert out.logits.shape == (3, 2)
    assert out.loss is not None and out.loss.ndim == 0


def test_bilstm_padding_invariance(bilstm, batch):
    reference = logits_of(bilstm, batch)
    extra = 5
    pad = bilstm.config.pad_token_id
    ids, mask = batch["input_ids"], batch["attention_mask"]
    padded = {
        "input_ids": torch.cat([ids, torch.full((ids.shape[0], extra), pad)], dim=1),
        "attention_mask": torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=mask.dtype)], dim=1),
    }
    assert torch.allclose(logits_of(bilstm, padded), reference, atol=1e-6)
    # left padding (real tokens last) gives the same result as right padding
    lengths = mask.sum(dim=1)
    left_ids, left_mask = torch.full_like(ids, pad), torch.zeros_like(mask)
    for row, n in enumerate(lengths.tolist()):
        left_ids[row, ids.shape[1] - n :] = ids[row, :n]
        left_mask[row, ids.shape[1] - n :] = 1
    assert torch.allclose(logits_of(bilstm, {"input_ids": left_ids, "attention_mask": left_mask}), reference, atol=1e-6)
    # each sentence alone (no padding at all) matches its row in the batch
    for row, n in enumerate(lengths.tolist()):
        alone = {"input_ids": ids[row : row + 1, :n], "attention_mask": mask[row : row + 1, :n]}
        assert torch.allclose(logits_of(bilstm, alone)[0], reference[row], atol=1e-5)


def test_bilstm_save_and_load_with_plain_transformers(bilstm, teacher, batch, tmp_path):
    _, tokenizer = teacher
    target = tmp_path / "bilstm"
    save_student(bilstm, tokenizer, target)
    config = json.loads((target / "config.json").read_text())
    assert config["model_type"] == "kdlab-bilstm"
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "bilstm.BiLSTMForSequenceClassification"
    assert (target / "bilstm.py").is_file()
    expected = logits_of(bilstm, batch)

    # inside kdlab the class is registered: no remote code needed
    loaded = AutoModelForSequenceClassification.from_pretrained(target)
    assert isinstance(loaded, BiLSTMForSequenceClassification)
    assert torch.allclose(logits_of(loaded, batch), expected, atol=1e-6)

    # a fresh process that never imports kdlab loads it with plain transformers
    result = load_without_kdlab(target, tmp_path, f"{SENTENCES!r}, padding=True")
    assert result["kdlab"] is False
    assert result["class"] == "BiLSTMForSequenceClassification"
    assert result["vocab"] == 30522
    assert torch.allclose(torch.tensor(result["logits"]), expected, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# inspect
# ------------------------------------------------------------------------------------------------------------


def test_describe_tiny_model(teacher, batch):
    model, _ = teacher
    rows = {row.path: row for row in describe(model, batch)}
    b, length = batch["input_ids"].shape
    assert rows[""].class_name == "BertForSequenceClassification"
    assert rows[""].total_params == parameter_count(model)
    assert rows[""].output_shapes == ((b, 2),)
    assert rows["bert.encoder.layer.2"].output_shapes == ((b, length, 32),)
    assert rows["bert.encoder.layer.2"].class_name == "BertLayer"
    assert rows["classifier"].own_params == 32 * 2 + 2
    assert rows["bert.encoder.layer"].calls == 0  # a ModuleList is never called itself
    assert rows["bert.encoder.layer.0.attention.self"].output_shapes[0] == (b, length, 32)
    assert not model._forward_hooks and not model.bert.encoder.layer[0]._forward_hooks
    table = render_table(list(rows.values()), max_depth=2)
    assert table.row_count == sum(1 for row in rows.values() if row.depth <= 2)
    assert render_table(list(rows.values())).row_count == len(rows)


def test_describe_minilm(minilm_path, minilm_tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    batch = dict(minilm_tokenizer(["one quick forward"], return_tensors="pt"))
    rows = {row.path: row for row in describe(model, batch)}
    length = batch["input_ids"].shape[1]
    assert rows["bert.encoder.layer.5"].output_shapes == ((1, length, 384),)
    assert rows["bert.embeddings.word_embeddings"].own_params == 30522 * 384
    assert 22_000_000 < rows[""].total_params < 23_000_000
    assert "bert.encoder.layer.6" not in rows
