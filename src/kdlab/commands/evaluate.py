"""evaluate: task metrics, size and CPU latency of a trained model on the recipe's dev split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kdlab.commands.build import check_max_length, load_data, task_spec
from kdlab.commands.images import evaluate_image_model
from kdlab.commands.words import evaluate_word_model
from kdlab.config import Recipe
from kdlab.data import student_inputs
from kdlab.data.images import is_image_task
from kdlab.data.treebank import is_word_task
from kdlab.engine.evaluation import evaluate as evaluate_items
from kdlab.errors import UserError
from kdlab.models import load_classifier, resolve_model
from kdlab.profiling import latency_ms, parameter_count

LATENCY_BATCH = 32


@dataclass
class Evaluation:
    """Dev metrics and cost of one model (``evaluate_word_model`` builds the same record for word tasks)."""

    model: str
    metrics: dict[str, float]
    parameters: int
    ms_per_batch: float
    ms_per_batch_std: float
    batch_size: int


def default_model_dir(recipe: Recipe) -> Path:
    out = Path(recipe.output.dir)
    for name in ("student", "model"):
        if (out / name / "config.json").is_file():
            return out / name
    raise UserError(
        f"no trained model in {str(out)!r}",
        key="--model",
        fix="give --model PATH, or run `kdlab distill` / `kdlab finetune` with this recipe first",
    )


def evaluate(recipe: Recipe, model: str | None = None) -> Evaluation:
    path = resolve_model(model, key="--model") if model else str(default_model_dir(recipe))
    if is_word_task(recipe.task):
        metrics, model, sample = evaluate_word_model(recipe, path, LATENCY_BATCH)
        median, std = latency_ms(model, sample)
        return Evaluation(path, metrics, parameter_count(model), median, std, int(sample["input_ids"].shape[0]))
    if is_image_task(recipe.task):
        metrics, model, sample = evaluate_image_model(recipe, path, LATENCY_BATCH)
        median, std = latency_ms(model, sample)
        return Evaluation(path, metrics, parameter_count(model), median, std, int(sample["pixel_values"].shape[0]))
    spec = task_spec(recipe.task)
    net, tokenizer = load_classifier(path, spec.num_labels, regression=spec.regression, key="--model")
    check_max_length(net, recipe.task.max_length, "--model")
    data = load_data(spec, recipe.task, tokenizer, recipe.train.seed, need_train=False)
    if not data.dev:
        raise UserError("the task has no dev split to evaluate on", key="task.dev", fix="give task.dev")
    device = torch.device("cpu")
    metrics = evaluate_items(
        net,
        data.dev,
        data.collate,
        recipe.train.eval_batch_size,
        device,
        spec.regression,
        spec.metrics,
        spec.num_labels,
    )
    sample = data.collate(data.dev[:LATENCY_BATCH])
    median, std = latency_ms(net, student_inputs(sample))
    return Evaluation(path, metrics, parameter_count(net), median, std, min(LATENCY_BATCH, len(data.dev)))
