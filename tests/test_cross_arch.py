"""Cross-architecture students on their own vocabulary, teacher labels computed once, and augmented data.

The teacher is a tiny random BERT on the MiniLM vocabulary; the students (BiRNN for QE, BiLSTM for SST-2)
tokenise the same real text into their own word vocabularies, so only the teacher's outputs can be matched.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import kdlab
from kdlab.commands.build import encode_data, load_teacher, task_spec
from kdlab.commands.training_set import load_splits
from kdlab.config import load_recipe
from kdlab.data import IGNORE_LABEL, Collator, Example, student_inputs, teacher_inputs
from kdlab.engine.teacher import FixedOutputs, LiveTeacher, label_outputs
from kdlab.errors import UserError
from kdlab.methods import FeatureMatcher, Objective
from kdlab.methods.stages import Stage
from kdlab.models import build_word_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
STAGE = Stage("vanilla", (), True, 1)


def qe_recipe(teacher: Path, out: Path, **sections) -> dict:
    spec = {
        "task": {"name": "mlqe-ro-en", "root": str(FIXTURES), "max_length": 48},
        "teacher": {"model": str(teacher)},
        "student": {"kind": "birnn", "embedding_dim": 8, "rnn_hidden_size": 8, "dropout": 0.0},
        "distill": {"method": "vanilla", "alpha": 1.0},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "lr": 1e-2,
            "log_every_steps": 1,
            "checkpoint_every_steps": None,
            "progress_bar": False,
        },
        "output": {"dir": str(out)},
    }
    for name, value in sections.items():
        spec[name] = {**spec.get(name, {}), **value} if isinstance(value, dict) else value
    return spec


AUGMENT = {
    "pools": [{"task": "mlqe-et-en"}],
    "perturb": {"copies": 2, "mask": 0.2, "replace": 0.1, "delete": 0.1, "ngram": 0.0, "fields": ["text_pair"]},
    "filter": "match_teacher",
    "filter_bins": 3,
}


def _refuse_teacher_steps(monkeypatch) -> None:
    """A live per-step teacher fails the test: outputs must have been labelled once (or read from a cache)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a per-step live teacher was built")

    monkeypatch.setattr(LiveTeacher, "__init__", refuse)


def _first_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])


# ---------------------------------------------------------------------------------------------- batches


def test_items_carry_both_views_and_unlabelled_items_are_marked(minilm_tokenizer):
    examples = [
        Example("Guvernul numește un prefect.", "The Government appoints a prefect.", 0.5),
        Example("Doar 200 de metri.", "Only 200 metres.", None),
    ]
    words = build_word_tokenizer([e.text for e in examples], [e.text_pair or "" for e in examples])
    r = load_recipe(qe_recipe(Path("t"), Path("o")))
    data = encode_data(examples, None, task_spec(r.task), r.task, words, minilm_tokenizer)
    batch = data.collate(data.train)
    assert torch.equal(
        batch["input_ids"][0, : len(data.train[0]["input_ids"])],
        torch.tensor(words(examples[0].text, examples[0].text_pair)["input_ids"]),
    )
    teacher_ids = minilm_tokenizer(examples[1].text, examples[1].text_pair)["input_ids"]
    assert batch["teacher_input_ids"][1, : len(teacher_ids)].tolist() == teacher_ids
    assert batch["teacher_attention_mask"][1].sum() == len(teacher_ids)
    assert torch.isnan(batch["labels"][1]) and batch["labels"][0] == pytest.approx(0.5)
    assert set(student_inputs(batch)) == {"input_ids", "attention_mask", "token_type_ids"}
    assert teacher_inputs(batch)["input_ids"] is batch["teacher_input_ids"]

    classes = Collator(0)([{"input_ids": [5], "label": 1}, {"input_ids": [6, 7], "label": None}])
    assert classes["labels"].tolist() == [1, IGNORE_LABEL]


def test_gold_term_averages_over_labelled_examples_only():
    student = torch.tensor([[0.3], [2.0], [-1.0]], requires_grad=True)
    labels = torch.tensor([1.0, float("nan"), 0.0])
    r = load_recipe(qe_recipe(Path("t"), Path("o"), distill={"method": "vanilla", "alpha": 0.0}))
    objective = Objective(r.distill, regression=True)
    batch = {"input_ids": torch.zeros(3, 2, dtype=torch.long), "labels": labels}
    loss = objective(STAGE, FeatureMatcher([]), student, {}, kdlab.engine.teacher.TeacherSignals(), batch).total
    assert loss.item() == pytest.approx(((0.3 - 1.0) ** 2 + 1.0) / 2)
    loss.backward()
    assert student.grad[1].item() == 0.0  # the unlabelled example has no gold gradient

    batch["labels"] = torch.full((3,), float("nan"))
    none = objective(STAGE, FeatureMatcher([]), student, {}, kdlab.engine.teacher.TeacherSignals(), batch).total
    assert none.item() == 0.0 and none.requires_grad

    classes = Objective(r.distill, regression=False)
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    batch = {"input_ids": torch.zeros(2, 2, dtype=torch.long), "labels": torch.tensor([0, IGNORE_LABEL])}
    ce = classes(STAGE, FeatureMatcher([]), logits, {}, kdlab.engine.teacher.TeacherSignals(), batch).total
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])).item())


# ---------------------------------------------------------------------------------------------- labelled once


def test_labelled_once_outputs_equal_the_live_teacher_through_the_teachers_own_view(tiny_regressor_dir):
    r = load_recipe(qe_recipe(tiny_regressor_dir, Path("o")))
    spec = task_spec(r.task)
    teacher, teacher_tokenizer = load_teacher(r, spec, attention=False)
    splits = load_splits(spec, r.task, r.train.seed)
    words = build_word_tokenizer([e.text for e in splits.train], [e.text_pair or "" for e in splits.train])
    data = encode_data(splits.train, splits.dev, spec, r.task, words, teacher_tokenizer)
    objective = Objective(r.distill, spec.regression)
    once = FixedOutputs({"train": label_outputs(teacher, data.train, data.collate, 7, torch.device("cpu"))}, objective)
    live = LiveTeacher(teacher, FeatureMatcher([]), objective, teacher_tokenizer.sep_token_id)
    live.prepare(torch.device("cpu"), contextlib.nullcontext)
    indices = [17, 3, 25, 0, 9]  # a shuffled training batch
    batch = data.collate([data.train[i] for i in indices])
    expected = live.signals(STAGE, batch, indices, "train").logits
    assert torch.allclose(once.signals(STAGE, batch, indices, "train").logits, expected, atol=1e-5)
    direct = teacher(**teacher_tokenizer([splits.train[17].text], [splits.train[17].text_pair], return_tensors="pt"))
    assert expected[0].item() == pytest.approx(direct.logits[0, 0].item(), abs=1e-5)


def test_label_once_trains_like_the_live_teacher(tiny_teacher_dir, tmp_path):
    """A shared-tokenizer student: labelling once changes the cost, not the targets (up to padding round-off)."""
    base = {
        "task": {"name": "sst2", "root": str(FIXTURES), "max_length": 32},
        "teacher": {"model": str(tiny_teacher_dir)},
        "student": {"kind": "shrink", "layers": [1, 3]},
        "distill": {"method": "vanilla", "alpha": 0.5},
        "train": {"epochs": 1, "batch_size": 8, "log_every_steps": 1, "progress_bar": False},
    }
    live = kdlab.distill({**base, "output": {"dir": str(tmp_path / "live")}})
    once = kdlab.distill(
        {**base, "teacher": {**base["teacher"], "label_once": True}, "output": {"dir": str(tmp_path / "once")}}
    )
    assert live.result.global_step == once.result.global_step
    for key in ("loss", "kd", "gold"):
        assert _first_record(tmp_path / "live")[key] == pytest.approx(_first_record(tmp_path / "once")[key], rel=1e-4)
    a, b = load_file(live.model_dir / "model.safetensors"), load_file(once.model_dir / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_birnn_qe_student_on_its_own_vocabulary(tiny_regressor_dir, tmp_path, monkeypatch):
    _refuse_teacher_steps(monkeypatch)  # outputs-only + own vocabulary: labelled once by default
    run = kdlab.distill(qe_recipe(tiny_regressor_dir, tmp_path / "qe"))
    assert run.result.global_step == 2 * 4  # 30 examples, batch 8, 2 epochs
    assert {"pearson", "spearman", "mae", "rmse"} <= set(run.result.dev_metrics)
    model = AutoModelForSequenceClassification.from_pretrained(run.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
    assert type(model).__name__ == "BiRNNForSequenceClassification"
    assert "prefect" in tokenizer.get_vocab() and len(tokenizer) < 2000  # its own word vocabulary
    record = _first_record(tmp_path / "qe")
    assert "kd" in record and "gold" not in record  # alpha 1: the teacher's scores only
    evaluation = kdlab.evaluate(qe_recipe(tiny_regressor_dir, tmp_path / "qe"))  # `kdlab evaluate` reads it back
    assert evaluation.metrics["pearson"] == pytest.approx(run.result.best_metric, abs=1e-6)
    assert evaluation.parameters < 100_000


@pytest.mark.slow
def test_gold_only_student_never_loads_the_teacher(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", refuse)
    run = kdlab.distill(qe_recipe(tmp_path / "no-teacher-here", tmp_path / "gold", distill={"method": "none"}))
    assert run.result.global_step == 8 and "pearson" in run.result.dev_metrics


@pytest.mark.slow
def test_augmented_inputs_are_labelled_by_the_teacher_and_never_dev(tiny_regressor_dir, tmp_path):
    augment = {**AUGMENT, "pools": [{"task": "mlqe-et-en"}, {"task": "mlqe-ro-en", "split": "dev"}]}
    run = kdlab.distill(qe_recipe(tiny_regressor_dir, tmp_path / "aug", augment=augment))
    report = run.extra["augment_report"]
    assert report["dropped_overlap"] >= 15  # every dev pair offered as a pool is refused
    assert report["from_pools"] >= 20 and report["from_perturbation"] > 0
    kept = run.extra["augmented_examples"]
    assert 0 < kept <= report["from_pools"] + report["from_perturbation"] - report["dropped_overlap"]
    steps_per_epoch = -(-(30 + kept) // 8)
    assert run.result.global_step == 2 * steps_per_epoch
    record = _first_record(tmp_path / "aug")
    assert record["kd"] > 0


@pytest.mark.slow
def test_augmented_inputs_go_through_the_cache(tiny_regressor_dir, tmp_path, monkeypatch):
    """`kdlab cache` stores every candidate; training then filters and learns from it without the teacher."""
    spec = qe_recipe(tiny_regressor_dir, tmp_path / "cached", augment=AUGMENT, cache={"dir": str(tmp_path / "c")})
    summary = kdlab.cache(spec, progress=False)
    live = kdlab.distill(qe_recipe(tiny_regressor_dir, tmp_path / "live", augment=AUGMENT))
    assert summary.examples >= 30 + 15 + live.extra["augmented_examples"]

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was loaded while training from a cache")

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", refuse)
    cached = kdlab.distill(spec)
    assert cached.extra["augmented_examples"] == live.extra["augmented_examples"]
    assert cached.result.global_step == live.result.global_step
    assert _first_record(tmp_path / "cached")["kd"] == pytest.approx(_first_record(tmp_path / "live")["kd"], rel=1e-4)


@pytest.mark.slow
def test_bilstm_on_its_own_vocabulary_with_perturbed_sst2(tiny_teacher_dir, tmp_path):
    spec = {
        "task": {"name": "sst2", "root": str(FIXTURES), "max_length": 32},
        "teacher": {"model": str(tiny_teacher_dir)},
        "student": {"kind": "bilstm", "vocab": "own", "embedding_dim": 16, "lstm_hidden_size": 16},
        "distill": {"method": "vanilla", "logit_loss": "mse", "alpha": 0.5},
        "augment": {"perturb": {"copies": 2}},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1e-2, "log_every_steps": 1, "progress_bar": False},
        "output": {"dir": str(tmp_path / "bilstm")},
    }
    run = kdlab.distill(spec)
    assert run.extra["augmented_examples"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(run.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) < 5000
    words = tokenizer(["a gorgeous , witty , seductive movie ."], return_tensors="pt")
    assert (words["input_ids"] != tokenizer.unk_token_id).sum() > 3  # its own words, not [UNK]
    evaluation = kdlab.evaluate(spec)  # recurrent students have no attention implementation to choose
    assert evaluation.metrics["accuracy"] == pytest.approx(run.result.best_metric)


# ---------------------------------------------------------------------------------------------- user errors


def _distill_error(spec: dict) -> UserError:
    with pytest.raises(UserError) as err:
        kdlab.distill(spec)
    assert not Path(spec["output"]["dir"]).exists(), "nothing may be written before the checks pass"
    return err.value


def test_impossible_combinations_are_refused_before_training(tiny_regressor_dir, tmp_path):
    match = {"teacher": "bert.encoder.layer.1", "student": "encoder", "loss": "mse"}
    err = _distill_error(
        qe_recipe(tiny_regressor_dir, tmp_path / "a", distill={"method": "internal", "matches": [match]})
    )
    assert err.key == "distill.matches" and "own vocabulary" in err.message

    err = _distill_error(qe_recipe(tiny_regressor_dir, tmp_path / "b", augment=AUGMENT, distill={"method": "none"}))
    assert err.key == "augment"

    spec = qe_recipe(tiny_regressor_dir, tmp_path / "c", augment=AUGMENT)
    spec["augment"]["pools"] = [{"path": str(tmp_path / "missing.tsv")}]
    err = _distill_error(spec)
    assert err.key.startswith("augment.pools[0]")


def test_cli_augment_errors_exit_2(tiny_regressor_dir, tmp_path):
    spec = qe_recipe(tiny_regressor_dir, tmp_path / "run", augment={**AUGMENT, "pools": [{"task": "no-such-task"}]})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "kdlab", "distill", str(tmp_path / "r.yaml")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2, done.stderr
    assert "no-such-task" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_augmentation_composes_with_feature_matches_and_a_live_teacher(tiny_teacher_dir, tmp_path):
    """Any recipe: a shrunk student matching hidden states sees augmented inputs through the per-step teacher."""
    spec = {
        "task": {"name": "sst2", "root": str(FIXTURES), "max_length": 32},
        "teacher": {"model": str(tiny_teacher_dir)},
        "student": {"kind": "shrink", "layers": [1, 3]},
        "distill": {
            "method": "internal",
            "alpha": 0.5,
            "matches": [{"teacher": "bert.encoder.layer.3", "student": "bert.encoder.layer.1", "loss": "mse"}],
        },
        "augment": {"perturb": {"copies": 1, "mask": 0.3}},
        "train": {"epochs": 1, "batch_size": 8, "log_every_steps": 1, "progress_bar": False},
        "output": {"dir": str(tmp_path / "run")},
    }
    run = kdlab.distill(spec)
    kept = run.extra["augmented_examples"]
    assert kept > 20
    assert run.result.global_step == -(-(40 + kept) // 8)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    assert all(r["match0_mse"] > 0 and r["gold"] == r["gold"] for r in train)  # gold finite: NaN labels masked
