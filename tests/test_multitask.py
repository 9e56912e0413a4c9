"""Multi-task and lifelong students: padded logits, save/load, sequential (L2KD, replay) and joint runs, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

import kdlab
from kdlab.errors import UserError
from kdlab.losses import hard_ce, logit_mse, soft_kd
from kdlab.methods.objective import Objective
from kdlab.methods.replay import KD_MASK, ReplayObjective
from kdlab.methods.stages import Stage
from kdlab.models.multitask import PAD_LOGIT, MultiTaskClassifier, load_multitask, pad_logits, save_multitask

FIXTURES = Path(__file__).parent / "fixtures"
TASKS = {"sst2": 2, "agnews": 4}


def tiny_learner(tokenizer) -> MultiTaskClassifier:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        pad_token_id=tokenizer.pad_token_id,
    )
    return MultiTaskClassifier(BertModel(config), TASKS).eval()


def batch(tokenizer, task_ids: list[int]) -> dict:
    texts = ["a fine film", "markets fell sharply today", "the team won", "chips get faster"][: len(task_ids)]
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    return {**inputs, "task_ids": torch.tensor(task_ids)}


def test_padded_classes_get_zero_probability(minilm_tokenizer):
    model = tiny_learner(minilm_tokenizer)
    with torch.no_grad():
        logits = model(**batch(minilm_tokenizer, [0, 1, 0, 1])).logits
    assert logits.shape == (4, 4)
    probs = logits.softmax(-1)
    assert torch.all(logits[[0, 2], 2:] == PAD_LOGIT)
    assert torch.all(probs[[0, 2], 2:] == 0)  # sst2 rows: classes 2 and 3 do not exist
    assert torch.all(probs[[1, 3]] > 0)
    assert torch.allclose(probs.sum(-1), torch.ones(4))
    assert torch.isfinite(torch.log_softmax(logits, -1)).all()
    # each row is its own task's head
    with torch.no_grad():
        pooled = model.dropout(
            model.pooled(**{k: v for k, v in batch(minilm_tokenizer, [0, 1]).items() if k != "task_ids"})
        )
        assert torch.allclose(logits[0, :2], model.heads["sst2"](pooled[0]), atol=1e-6)
        assert torch.allclose(logits[1], model.heads["agnews"](pooled[1]), atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 10.0])
def test_kd_losses_ignore_the_padding(temperature):
    torch.manual_seed(1)
    student, teacher = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    padded = soft_kd(pad_logits(student, 4), pad_logits(teacher, 4), temperature)
    assert torch.allclose(padded, soft_kd(student, teacher, temperature), atol=1e-10)
    assert torch.isfinite(padded)
    labels = torch.tensor([0, 1, 1, 0, 1])
    assert torch.allclose(hard_ce(pad_logits(student, 4), labels), hard_ce(student, labels), atol=1e-10)
    # the logit MSE sees identical padded columns: zero difference there (the mean runs over C_max columns)
    assert torch.allclose(logit_mse(pad_logits(student, 4), pad_logits(teacher, 4)) * 2, logit_mse(student, teacher))
    # gradients stay finite and leave the padded columns alone
    s = pad_logits(student, 4).requires_grad_(True)
    soft_kd(s, pad_logits(teacher, 4), temperature).backward()
    assert torch.isfinite(s.grad).all() and torch.all(s.grad[:, 2:] == 0)


def test_replay_items_get_gold_ce_only():
    from kdlab.config import DistillConfig
    from kdlab.engine.teacher import TeacherSignals
    from kdlab.methods.matches import FeatureMatcher

    torch.manual_seed(2)
    student, teacher = torch.randn(6, 4), torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    mask = torch.tensor([1, 1, 1, 0, 0, 1])
    inner = Objective(DistillConfig(method="vanilla", alpha=0.7, temperature=2.0), False)
    stage = Stage("vanilla", (), True, 1)
    step = ReplayObjective(inner)(
        stage, FeatureMatcher([]), student, {}, TeacherSignals(logits=teacher), {"labels": labels, KD_MASK: mask}
    )
    new, old = mask.bool(), ~mask.bool()
    expected_new = 0.3 * hard_ce(student[new], labels[new]) + 0.7 * soft_kd(student[new], teacher[new], 2.0)
    expected = (4 * expected_new + 2 * hard_ce(student[old], labels[old])) / 6
    assert torch.allclose(step.total, expected)
    assert "replay_gold" in step.parts and "kd" in step.parts


def test_save_load_round_trip(minilm_tokenizer, tmp_path):
    model = tiny_learner(minilm_tokenizer)
    save_multitask(model, minilm_tokenizer, tmp_path / "learner")
    loaded, tokenizer = load_multitask(tmp_path / "learner")
    inputs = batch(minilm_tokenizer, [1, 0, 1])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
    assert loaded.task_names == list(TASKS)
    assert len(tokenizer) > 1000
    assert tokenizer.convert_tokens_to_ids("film") != tokenizer.unk_token_id
    assert (tmp_path / "learner" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------- runs
def recipe(base: Path, out: Path, mode: str = "sequential", method: str = "vanilla", **multitask) -> dict:
    return {
        "task": {"name": "sst2", "root": str(FIXTURES), "max_length": 32},
        "teacher": {"model": str(base)},
        "student": {"kind": "shrink", "layers": [1, 3]},
        "distill": {"method": method, "temperature": 2.0, "alpha": 0.5},
        "multitask": {
            "tasks": ["sst2", "cola"],
            "mode": mode,
            "max_train_examples": 16,
            "max_dev_examples": 10,
            **multitask,
        },
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "lr": 1e-3,
            "progress_bar": False,
            "checkpoint_every_steps": None,
            "log_every_steps": 1,
        },
        "output": {"dir": str(out)},
    }


@pytest.fixture(scope="module")
def fixture_teachers(tiny_teacher_dir) -> dict[str, str]:
    # both fixture tasks are binary: the tiny random 2-label BERT serves as each task's teacher
    return {"sst2": str(tiny_teacher_dir), "cola": str(tiny_teacher_dir)}


def test_sequential_l2kd_with_replay(tiny_teacher_dir, fixture_teachers, tmp_path):
    run = kdlab.distill(recipe(tiny_teacher_dir, tmp_path / "l2kd", teachers=fixture_teachers, replay=5))
    record = json.loads((tmp_path / "l2kd" / "lifelong.json").read_text())
    assert [step["task"] for step in record["steps"]] == ["sst2", "cola"]
    for step in record["steps"]:
        assert set(step["dev"]) == {"sst2", "cola"}
        assert "mcc" in step["dev"]["cola"] and "accuracy" in step["dev"]["sst2"]
    assert record["steps"][0]["replay_items"] == {}
    assert record["steps"][1]["replay_items"] == {"sst2": 5}
    assert record["steps"][1]["train_items"] == {"cola": 16}
    assert set(record["teachers"]) == {"sst2", "cola"}
    assert record["final"]["average"] == pytest.approx(
        (record["steps"][1]["dev"]["sst2"]["accuracy"] + record["steps"][1]["dev"]["cola"]["mcc"]) / 2
    )
    log = [
        json.loads(line) for line in (tmp_path / "l2kd" / "steps" / "2-cola" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("replay_gold" in r and "kd" in r for r in log if r["split"] == "train")
    assert not (tmp_path / "l2kd" / "steps" / "2-cola" / "checkpoints").exists()  # dropped once the step is scored
    learner, tokenizer = load_multitask(run.model_dir)
    assert learner.task_names == ["sst2", "cola"] and len(tokenizer) > 1000


def test_sequential_finetune_needs_no_teacher(tiny_teacher_dir, tmp_path):
    kdlab.distill(recipe(tiny_teacher_dir, tmp_path / "ft", method="none"))
    record = json.loads((tmp_path / "ft" / "lifelong.json").read_text())
    assert len(record["steps"]) == 2 and record["teachers"] == {}
    assert not (tmp_path / "ft" / "teachers").exists()
    # resuming a finished run trains nothing again and keeps its rows
    kdlab.distill(recipe(tiny_teacher_dir, tmp_path / "ft", method="none"), resume=True)
    assert json.loads((tmp_path / "ft" / "lifelong.json").read_text())["steps"] == record["steps"]


def test_joint_run_fine_tunes_missing_teachers(tiny_teacher_dir, fixture_teachers, tmp_path):
    spec = recipe(tiny_teacher_dir, tmp_path / "bam", mode="joint", teachers={"sst2": fixture_teachers["sst2"]})
    spec["distill"]["alpha_schedule"] = "linear"
    kdlab.distill(spec)
    record = json.loads((tmp_path / "bam" / "lifelong.json").read_text())
    assert [step["task"] for step in record["steps"]] == ["joint"]
    assert record["steps"][0]["train_items"] == {"sst2": 16, "cola": 16}
    assert (tmp_path / "bam" / "teachers" / "cola" / "model" / "config.json").is_file()
    assert not (tmp_path / "bam" / "teachers" / "sst2").exists()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"multitask": {"tasks": ["sst2", "nope"]}}, "multitask.tasks[1]"),
        ({"multitask": {"tasks": ["sst2", "mlqe-ro-en"]}}, "multitask.tasks[1]"),
        ({"multitask": {"tasks": ["sst2", "rte"]}, "task": {"root": "/nonexistent"}}, "multitask.tasks[0]"),
        ({"multitask": {"tasks": ["sst2", "cola"], "teachers": {"rte": "x"}}}, "multitask.teachers"),
        ({"student": {"kind": "bilstm"}}, "student.kind"),
        ({"cache": {"dir": "somewhere"}}, "cache.dir"),
        ({"augment": {"perturb": {"copies": 1}}}, "augment"),
        ({"distill": {"method": "annealing"}}, "distill.method"),
        ({"multitask": {"tasks": ["sst2", "cola"], "mode": "joint", "replay": 3}}, "multitask.replay"),
        ({"task": {"text": "sentence"}}, "task.text"),
    ],
)
def test_user_errors_before_any_work(tiny_teacher_dir, tmp_path, change, key):
    spec = recipe(tiny_teacher_dir, tmp_path / "out")
    for section, values in change.items():
        spec[section] = {**spec.get(section, {}), **values}
    with pytest.raises(UserError) as err:
        kdlab.distill(spec)
    assert err.value.key == key
    assert not (tmp_path / "out").exists()


def test_finetune_refuses_multitask(tiny_teacher_dir, tmp_path):
    spec = recipe(tiny_teacher_dir, tmp_path / "out")
    del spec["student"], spec["distill"]
    with pytest.raises(UserError) as err:
        kdlab.finetune(spec)
    assert err.value.key == "multitask"
