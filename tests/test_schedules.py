"""Annealing-KD (loss, temperature schedule, stages), BAM's linear alpha schedule, and teacher-assistant chains."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import tiny_recipe
from transformers import AutoModelForSequenceClassification

import kdlab
from kdlab.config import DistillConfig, load_recipe
from kdlab.errors import UserError
from kdlab.methods.annealing import (
    AnnealingObjective,
    annealed_logit_mse,
    annealing_factor,
    annealing_temperature,
)
from kdlab.methods.matches import FeatureMatcher
from kdlab.methods.objective import Objective
from kdlab.methods.stages import Stage, build_stages

ANNEAL = Stage("anneal", (), True, 2)
HARD = Stage("hard", (), True, 1)


def test_annealing_factor_ends():
    assert annealing_factor(7, 7) == pytest.approx(1 / 7)
    assert annealing_factor(1, 7) == 1.0
    assert annealing_factor(4, 7) == pytest.approx(1 - 3 / 7)


def test_temperature_steps_down_evenly_over_phase_one():
    tau_max = 4
    fractions = [i / 100 for i in range(100)]
    temps = [annealing_temperature(f, tau_max) for f in fractions]
    assert temps[0] == 4 and temps[-1] == 1
    assert temps == sorted(temps, reverse=True)
    # each temperature gets a quarter of the stage; the boundaries sit exactly at k / tau_max
    assert [temps.count(t) for t in (4, 3, 2, 1)] == [25, 25, 25, 25]
    assert annealing_temperature(0.2499, 4) == 4 and annealing_temperature(0.25, 4) == 3
    assert annealing_temperature(1.0, 4) == 1  # the very end stays at 1, never 0
    with pytest.raises(ValueError):
        annealing_temperature(1.5, 4)


def test_annealed_mse_value_and_zero():
    student = torch.tensor([[1.0, -2.0, 0.5]])
    teacher = torch.tensor([[7.0, 0.0, -7.0]])
    # T = tau_max = 7: target is teacher / 7 = [1, 0, -1]
    expected = ((1 - 1) ** 2 + (-2 - 0) ** 2 + (0.5 + 1) ** 2) / 3
    assert annealed_logit_mse(student, teacher, 7, 7).item() == pytest.approx(expected)
    assert annealed_logit_mse(teacher, teacher, 1, 7).item() == 0.0
    assert annealed_logit_mse(teacher / 7, teacher, 7, 7).item() == pytest.approx(0.0, abs=1e-12)


def test_annealed_mse_gradcheck():
    student = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: annealed_logit_mse(s, teacher, 3, 5), (student,))


def _signals(logits):
    from kdlab.engine.teacher import TeacherSignals

    return TeacherSignals(logits=logits)


def test_annealing_objective_phases():
    objective = AnnealingObjective(DistillConfig(method="annealing", tau_max=5), regression=False)
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    teacher = torch.tensor([[5.0, -5.0], [0.0, 5.0]])
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "labels": torch.tensor([0, -100])}
    matcher = FeatureMatcher([])
    objective.set_progress(ANNEAL, 0.0)
    first = objective(ANNEAL, matcher, student, {}, _signals(teacher), batch)
    assert first.parts["tau"].item() == 5
    assert first.total.item() == pytest.approx(annealed_logit_mse(student, teacher, 5, 5).item())
    objective.set_progress(ANNEAL, 0.99)
    last = objective(ANNEAL, matcher, student, {}, _signals(teacher), batch)
    assert last.parts["tau"].item() == 1
    assert last.total.item() == pytest.approx(((student - teacher) ** 2).mean().item())
    # phase 2: gold CE only (the unlabelled example is skipped), no teacher read at all
    assert objective.needs_teacher_logits(ANNEAL) and not objective.needs_teacher_logits(HARD)
    hard = objective(HARD, matcher, student, {}, _signals(None), batch)
    assert hard.total.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    # a hard-stage progress call does not move the temperature
    objective.set_progress(HARD, 0.0)
    assert objective.temperature_now == 1


def test_annealing_stages():
    cfg = DistillConfig(method="annealing", hard_epochs=2)
    stages = build_stages(cfg, 3, [])
    assert [(s.name, s.epochs, s.use_logits) for s in stages] == [("anneal", 3, True), ("hard", 2, True)]
    assert [s.name for s in build_stages(DistillConfig(method="annealing", hard_epochs=0), 3, [])] == ["anneal"]


def test_linear_alpha_schedule_moves_from_teacher_to_gold():
    objective = Objective(DistillConfig(alpha=0.8, alpha_schedule="linear"), regression=False)
    stage = Stage("vanilla", (), True, 4)
    objective.set_progress(stage, 0.0)
    assert objective.alpha == pytest.approx(0.8)
    objective.set_progress(stage, 0.5)
    assert objective.alpha == pytest.approx(0.4)
    objective.set_progress(stage, 1.0)
    assert objective.alpha == 0.0
    constant = Objective(DistillConfig(alpha=0.8), regression=False)
    constant.set_progress(stage, 0.9)
    assert constant.alpha == 0.8


def test_annealing_refuses_topk():
    with pytest.raises(UserError, match="dense logits"):
        load_recipe(
            {"task": {"name": "sst2"}, "teacher": {"model": "x"}, "distill": {"method": "annealing", "logit_topk": 1}}
        )


@pytest.mark.slow
def test_annealing_run_logs_both_phases_and_falling_temperature(tiny_teacher_dir, tmp_path):
    recipe = tiny_recipe(str(tiny_teacher_dir), tmp_path / "anneal", method="annealing", tau_max=3, hard_epochs=1)
    recipe["teacher"]["label_once"] = True
    recipe["train"]["checkpoint_every_steps"] = 100
    run = kdlab.distill(recipe)
    records = [json.loads(line) for line in (tmp_path / "anneal" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    taus = [r["tau"] for r in train if r["stage"] == "anneal"]
    assert taus[0] == 3 and taus[-1] == 1 and taus == sorted(taus, reverse=True)
    assert any(r["stage"] == "hard" and "gold" in r for r in train)
    assert run.model_dir.is_dir()


@pytest.mark.slow
def test_assistant_chain_trains_each_hop_from_the_previous_model(tiny_teacher_dir, tmp_path):
    out = tmp_path / "chain"
    recipe = tiny_recipe(str(tiny_teacher_dir), out)
    recipe["train"]["epochs"] = 1
    # each hop is any KD recipe: the assistant learns by Annealing-KD, the student by soft-label KD
    annealing = {"method": "annealing", "tau_max": 2, "hard_epochs": 0}
    recipe["assistants"] = [{"student": {"kind": "shrink", "layers": [0, 1, 3]}, "distill": annealing}]
    recipe["student"] = {"kind": "shrink", "layers": [2]}
    run = kdlab.distill(recipe)
    assistant_log = (out / "assistant-1" / "metrics.jsonl").read_text()
    assert '"tau"' in assistant_log and '"anneal_mse"' in assistant_log
    assert '"tau"' not in (out / "final" / "metrics.jsonl").read_text()
    assistant = AutoModelForSequenceClassification.from_pretrained(out / "assistant-1" / "student")
    student = AutoModelForSequenceClassification.from_pretrained(run.model_dir)
    assert run.model_dir == out / "final" / "student"
    assert assistant.config.num_hidden_layers == 3 and student.config.num_hidden_layers == 1
    # the student was cut from the assistant (its layer 2), not from the teacher
    hop_recipe = (out / "final" / "recipe.yaml").read_text()
    assert str(out / "assistant-1" / "student") in hop_recipe
    # the whole chain can be resumed (finished hops are no-ops) and overwritten
    assert kdlab.distill(recipe, resume=True).model_dir == run.model_dir
    with pytest.raises(UserError, match="already holds a run"):
        kdlab.distill(recipe)
    recipe["output"]["overwrite"] = True
    assert kdlab.distill(recipe).model_dir.is_dir()


def test_assistant_chain_refuses_a_cache(tiny_teacher_dir, tmp_path):
    recipe = tiny_recipe(str(tiny_teacher_dir), tmp_path / "c")
    recipe["assistants"] = [{"student": {"kind": "shrink", "layers": [0, 1]}}]
    recipe["cache"] = {"dir": str(tmp_path / "cache")}
    with pytest.raises(UserError, match="cache"):
        kdlab.distill(recipe)
    assert not (tmp_path / "c").exists()


def test_finetune_refuses_assistants(tiny_teacher_dir, tmp_path):
    recipe = tiny_recipe(str(tiny_teacher_dir), tmp_path / "f")
    del recipe["student"], recipe["distill"]
    recipe["assistants"] = [{"student": {"kind": "shrink", "layers": [0]}}]
    with pytest.raises(UserError, match="chain"):
        kdlab.finetune(recipe)
