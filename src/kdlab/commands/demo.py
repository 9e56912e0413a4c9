"""demo: fine-tune MiniLM on the SST-2 sample shipped in the package, distil a 2-layer student, compare them."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kdlab.commands.evaluate import Evaluation, evaluate
from kdlab.commands.runs import distill, finetune
from kdlab.config import Recipe, load_recipe


@dataclass
class DemoResult:
    teacher: Evaluation
    student: Evaluation
    student_dir: Path


def demo_recipes(output: str, overrides: tuple[str, ...] = ()) -> tuple[Recipe, Recipe]:
    """The two packaged recipes, writing under ``output``."""
    recipes = resources.files("kdlab") / "recipes"
    teacher_dir = f"{output}/teacher"
    teacher = load_recipe(
        str(recipes / "demo_teacher.yaml"), [f"output.dir={teacher_dir}", "output.overwrite=true", *overrides]
    )
    student = load_recipe(
        str(recipes / "demo_student.yaml"),
        [
            f"teacher.model={teacher_dir}/model",
            f"output.dir={output}/student",
            "output.overwrite=true",
            *overrides,
        ],
    )
    return teacher, student


def run_demo(output: str = "runs/demo", overrides: tuple[str, ...] = ()) -> DemoResult:
    teacher_recipe, student_recipe = demo_recipes(output, overrides)
    teacher_run = finetune(teacher_recipe)
    student_run = distill(student_recipe)
    return DemoResult(
        teacher=evaluate(teacher_recipe, str(teacher_run.model_dir)),
        student=evaluate(student_recipe, str(student_run.model_dir)),
        student_dir=student_run.model_dir,
    )
