"""End-to-end training through the CLI and the API on a tiny random BERT and a few real SST-2 sentences."""

from __future__ import annotations

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
from kdlab.engine.checkpoint import latest_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_recipe(teacher: str, out: Path, **distill) -> dict:
    recipe = {
        "task": {"name": "sst2", "root": str(FIXTURES), "max_length": 32},
        "teacher": {"model": teacher},
        "student": {"kind": "shrink", "layers": [1, 3]},
        "distill": {"method": "vanilla", "temperature": 2.0, "alpha": 0.5, **distill},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "lr": 1e-3,
            "log_every_steps": 1,
            "checkpoint_every_steps": 2,
            "progress_bar": False,
        },
        "output": {"dir": str(out)},
    }
    return recipe


INTERNAL = [
    {
        "teacher": "bert.encoder.layer.1.attention.self",
        "student": "bert.encoder.layer.0.attention.self",
        "loss": "attention_kl",
    },
    {"teacher": "bert.encoder.layer.1", "student": "bert.encoder.layer.0", "loss": "cosine", "tokens": "cls"},
    {"teacher": "bert.encoder.layer.3", "student": "bert.encoder.layer.1", "loss": "mse"},
]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run(
        [sys.executable, "-m", "kdlab", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.mark.slow
def test_cli_finetune_then_distill_then_evaluate(tiny_teacher_dir, tmp_path):
    finetune = tiny_recipe(str(tiny_teacher_dir), tmp_path / "teacher")
    del finetune["student"], finetune["distill"]
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(finetune))
    done = run_cli("finetune", str(tmp_path / "teacher.yaml"), "--set", "train.epochs=1")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "teacher" / "model" / "config.json").is_file()

    student = tiny_recipe(
        str(tmp_path / "teacher" / "model"), tmp_path / "student", method="internal", matches=INTERNAL
    )
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(student))
    done = run_cli("distill", str(tmp_path / "student.yaml"))
    assert done.returncode == 0, done.stderr
    saved = tmp_path / "student" / "student"
    assert "student saved to" in done.stdout

    # plain transformers loads the student for inference, with its full tokenizer
    model = AutoModelForSequenceClassification.from_pretrained(saved)
    tokenizer = AutoTokenizer.from_pretrained(saved)
    assert model.config.num_hidden_layers == 2
    assert len(tokenizer) > 1000
    assert not any("projection" in k for k in load_file(saved / "model.safetensors"))

    records = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert train and all({"loss", "kd", "gold", "samples_per_s"} <= r.keys() for r in train)
    assert any("match0_attention_kl" in r for r in train)
    assert any(r["split"] == "dev" and "accuracy" in r for r in records)

    done = run_cli("evaluate", str(tmp_path / "student.yaml"), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0 and result["parameters"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pid", "sid"])
def test_progressive_methods_train_each_stage(tiny_teacher_dir, tmp_path, method):
    recipe = tiny_recipe(str(tiny_teacher_dir), tmp_path / method, method=method, matches=INTERNAL)
    recipe["train"]["epochs"] = 1
    run = kdlab.distill(recipe)
    records = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    stages = [r["stage"] for r in records if r["split"] == "train"]
    assert stages[0] == "layer1" and "layer2" in stages and stages[-1] == "logits"
    layer2 = [r for r in records if r["stage"] == "layer2" and r["split"] == "train"]
    # PID drops the layer-1 losses in stage 2; SID keeps them
    has_layer1_terms = any("match0_attention_kl" in r for r in layer2)
    assert has_layer1_terms == (method == "sid")
    assert all("kd" not in r for r in layer2)  # no logit loss before the final stage
    assert run.result.global_step > 0


@pytest.mark.slow
def test_resume_gives_identical_weights(tiny_teacher_dir, tmp_path):
    straight = tiny_recipe(str(tiny_teacher_dir), tmp_path / "straight", method="internal", matches=INTERNAL)
    straight["train"]["max_steps"] = 8
    kdlab.distill(straight)

    halves = tiny_recipe(str(tiny_teacher_dir), tmp_path / "halves", method="internal", matches=INTERNAL)
    halves["train"]["max_steps"] = 4
    first = kdlab.distill(halves)
    assert not first.result.finished and first.result.global_step == 4
    kdlab.distill(halves, ["train.max_steps=8"], resume=True)

    a = load_file(latest_checkpoint(tmp_path / "straight" / "checkpoints") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "halves" / "checkpoints") / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tiny_teacher_dir, tmp_path):
    """DDP (2 CPU processes, gloo) on the same global batch gives the same weights as one process."""
    # Dropout draws different masks for two half batches than for one whole batch: switch it off.
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir)
    teacher.config.hidden_dropout_prob = teacher.config.attention_probs_dropout_prob = 0.0
    teacher.save_pretrained(tmp_path / "teacher")
    AutoTokenizer.from_pretrained(tiny_teacher_dir).save_pretrained(tmp_path / "teacher")

    def recipe_file(name: str) -> Path:
        # Per-example losses only: a token-averaged loss (like "mse" over all tokens) is averaged per process,
        # which weighs tokens slightly differently from one process averaging over the whole batch.
        recipe = tiny_recipe(str(tmp_path / "teacher"), tmp_path / name, method="internal", matches=INTERNAL[:2])
        recipe["train"].update(max_steps=4, checkpoint_every_steps=4, lr=1e-3)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    single = run_cli("distill", str(recipe_file("single")), "--set", "distill.alpha=0.5")
    assert single.returncode == 0, single.stderr
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        "-m",
        "kdlab",
        "distill",
        str(recipe_file("ddp")),
    ]
    ddp = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = load_file(latest_checkpoint(tmp_path / "single" / "checkpoints") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "ddp" / "checkpoints") / "model.safetensors")
    compared = 0
    for key in a:
        if key.endswith("key.bias"):
            # Softmax is invariant to the key bias: its true gradient is 0, and Adam turns rounding noise
            # there into full-size steps, so these weights carry noise, not training.
            continue
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key
        compared += 1
    assert compared > 10


@pytest.mark.slow
def test_bilstm_student_distils_and_loads_with_plain_transformers(tiny_teacher_dir, tmp_path):
    recipe = tiny_recipe(str(tiny_teacher_dir), tmp_path / "bilstm")
    recipe["student"] = {"kind": "bilstm", "lstm_hidden_size": 16}
    run = kdlab.distill(recipe, ["train.epochs=1"])
    model = AutoModelForSequenceClassification.from_pretrained(run.model_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(run.model_dir, trust_remote_code=True)
    assert type(model).__name__ == "BiLSTMForSequenceClassification"
    logits = model(**tokenizer(["a gorgeous film"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)


@pytest.mark.slow
def test_narrow_student_learns_projections_that_are_not_saved(tiny_teacher_dir, tmp_path):
    recipe = tiny_recipe(
        str(tiny_teacher_dir),
        tmp_path / "narrow",
        method="internal",
        matches=[
            {"teacher": "bert.embeddings", "student": "bert.embeddings", "loss": "mse", "projection": True},
            {"teacher": "bert.encoder.layer.3", "student": "bert.encoder.layer.1", "loss": "mse", "projection": True},
            {
                "teacher": "bert.encoder.layer.3.attention.self",
                "student": "bert.encoder.layer.1.attention.self",
                "loss": "attention_mse",
            },
        ],
    )
    recipe["student"].update(hidden_size=16, intermediate_size=32)
    run = kdlab.distill(recipe, ["train.epochs=1"])
    checkpoint = load_file(latest_checkpoint(tmp_path / "narrow" / "checkpoints") / "model.safetensors")
    assert checkpoint["matcher.projections.0.weight"].shape == (32, 16)
    saved = load_file(run.model_dir / "model.safetensors")
    assert not any("projection" in key for key in saved)
    assert AutoModelForSequenceClassification.from_pretrained(run.model_dir).config.hidden_size == 16


@pytest.mark.slow
def test_plateau_stages_stop_on_dev_loss(tiny_teacher_dir, tmp_path):
    recipe = tiny_recipe(
        str(tiny_teacher_dir),
        tmp_path / "plateau",
        method="pid",
        matches=INTERNAL,
        stage_until="plateau",
        stage_epochs=4,
        plateau_patience=1,
        plateau_min_delta=0.99,  # demands a 99 % drop per epoch: every layer stage stops after 2 epochs
    )
    recipe["train"]["epochs"] = 1
    kdlab.distill(recipe)
    records = [json.loads(line) for line in (tmp_path / "plateau" / "metrics.jsonl").read_text().splitlines()]
    watched = [r["stage"] for r in records if "stage_loss" in r]
    assert watched == ["layer1", "layer1", "layer2", "layer2"]


def test_teacher_forward_is_cut_when_no_logits_are_needed(tiny_teacher_dir):
    from kdlab.commands.build import load_teacher, task_spec
    from kdlab.config import load_recipe
    from kdlab.methods import FeatureMatcher, Objective, build_stages
    from kdlab.taps import FeatureTaps

    recipe = load_recipe(tiny_recipe(str(tiny_teacher_dir), Path("unused"), method="pid", matches=INTERNAL))
    teacher, tokenizer = load_teacher(recipe, task_spec(recipe.task), attention=True)
    matcher, objective = FeatureMatcher(recipe.distill.matches), Objective(recipe.distill, regression=False)
    stages = build_stages(recipe.distill, 1, [n for n, _ in teacher.named_modules()])
    ran: list[int] = []
    for i, layer in enumerate(teacher.bert.encoder.layer):
        layer.register_forward_hook(lambda *_, i=i: ran.append(i))
    inputs = dict(tokenizer(["a fine film"], return_tensors="pt"))
    for stage, deepest in zip(stages, (1, 3, 3), strict=True):
        ran.clear()
        specs = matcher.tap_specs("teacher", stage.matches)
        taps = FeatureTaps(teacher, specs, stop_early=not objective.needs_teacher_logits(stage))
        _, output = taps(**inputs)
        assert max(ran) == deepest
        assert (output is None) == (not stage.use_logits)
    assert ran == [0, 1, 2, 3]


@pytest.mark.slow
def test_accumulation_mixed_precision_and_tensorboard(tiny_teacher_dir, tmp_path):
    recipe = tiny_recipe(str(tiny_teacher_dir), tmp_path / "bf16")
    recipe["train"].update(grad_accum_steps=2, mixed_precision="bf16", tensorboard=True, epochs=1)
    run = kdlab.distill(recipe)
    assert run.result.global_step == 3  # 5 batches, 2 per step, the leftover one at the epoch end
    assert any((tmp_path / "bf16" / "tensorboard").iterdir())


def test_inspect_lists_module_paths(tiny_teacher_dir):
    done = run_cli("inspect", str(tiny_teacher_dir))
    assert done.returncode == 0, done.stderr
    assert "bert.encoder.layer.3.attention.self" in done.stdout
