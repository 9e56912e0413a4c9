"""The command line: ``kdlab finetune | cache | distill | evaluate | inspect | demo``.

User mistakes (:class:`kdlab.errors.UserError`) print one message and exit with status 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kdlab import api
from kdlab.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Knowledge distillation: fine-tune a teacher, distil it into a small student, evaluate, inspect.",
)
console = Console()

RecipeArg = Annotated[str, typer.Argument(help="YAML recipe (see configs/)")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override a recipe key, e.g. --set train.lr=3e-5")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue the run in output.dir from its last checkpoint")]


@app.command()
def finetune(recipe: RecipeArg, set_: SetOpt = None, resume: ResumeOpt = False) -> None:
    """Fine-tune teacher.model on the task's gold labels (to get a teacher)."""
    run = api.finetune(recipe, set_ or [], resume=resume)
    _report_run("model", run)


@app.command()
def distill(recipe: RecipeArg, set_: SetOpt = None, resume: ResumeOpt = False) -> None:
    """Distil teacher.model into the recipe's student."""
    run = api.distill(recipe, set_ or [], resume=resume)
    _report_run("student", run)


@app.command()
def cache(
    recipe: RecipeArg,
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing cache in cache.dir")] = False,
) -> None:
    """Run the teacher once and store the knowledge the recipe's losses need in cache.dir (train without it then)."""
    summary = api.cache(recipe, set_ or [], overwrite=overwrite)
    console.print(
        f"cached {summary.examples:,} examples in {summary.seconds:.1f} s: {summary.bytes / 2**20:.1f} MiB "
        f"({summary.bytes_per_example:,.0f} bytes per example) in [bold]{summary.dir}[/bold]"
    )
    for signature in summary.signals:
        console.print(f"  {signature}")
    console.print("train from it with `kdlab distill` on a recipe with the same cache.dir")


@app.command()
def evaluate(
    recipe: RecipeArg,
    model: Annotated[str | None, typer.Option(help="model folder (default: the recipe's output)")] = None,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Dev metrics, parameter count and CPU latency of a trained model."""
    result = api.evaluate(recipe, set_ or [], model=model)
    if as_json:
        print(json.dumps(result.__dict__, indent=2))
        return
    table = Table(title=f"evaluation of {result.model}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(f"dev {name}", f"{value:.4f}")
    table.add_row("parameters", f"{result.parameters:,}")
    table.add_row(
        f"ms per batch of {result.batch_size} (CPU)",
        f"{result.ms_per_batch:.1f} ± {result.ms_per_batch_std:.1f}",
    )
    console.print(table)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="model folder, hub name, or 'minilm'")],
    text: Annotated[str | None, typer.Option(help="sample sentence for the output shapes")] = None,
    depth: Annotated[int | None, typer.Option(help="show modules up to this path depth")] = None,
) -> None:
    """Module paths, parameter counts and output shapes on a sample batch (for writing layer maps)."""
    from kdlab.models.inspect import render_table

    rows = api.inspect(model, text=text)
    console.print(render_table(rows, max_depth=depth))


@app.command()
def demo(
    output: Annotated[str, typer.Option(help="folder for the demo's runs")] = "runs/demo",
    set_: SetOpt = None,
) -> None:
    """Fine-tune MiniLM on the bundled SST-2 sample, distil a 2-layer student, compare size, speed and accuracy."""
    result = api.demo(output, set_ or [])
    teacher, student = result.teacher, result.student
    table = Table(title="kdlab demo: SST-2 sample, MiniLM teacher -> 2-layer student (internal KD)")
    for column in ("model", "parameters", f"ms / batch of {teacher.batch_size} (CPU)", "dev accuracy"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for name, ev in (("teacher (MiniLM, 6 layers)", teacher), ("student (2 layers)", student)):
        table.add_row(name, f"{ev.parameters:,}", f"{ev.ms_per_batch:.1f}", f"{ev.metrics['accuracy']:.4f}")
    table.add_row(
        "student / teacher",
        f"{student.parameters / teacher.parameters:.2f}×",
        f"{student.ms_per_batch / teacher.ms_per_batch:.2f}×",
        f"{student.metrics['accuracy'] / max(teacher.metrics['accuracy'], 1e-9):.1%}",
    )
    console.print(table)
    console.print(f"student saved to [bold]{result.student_dir}[/bold] (load it with transformers' from_pretrained)")


def _report_run(kind: str, run: api.RunSummary) -> None:
    best = run.result.best_metric
    metric = f", best dev {best:.4f}" if best is not None else ""
    state = "finished" if run.result.finished else "stopped at train.max_steps (continue with --resume)"
    report = run.extra.get("augment_report")
    if report is not None:
        console.print(
            f"augmentation: trained on {run.extra['augmented_examples']} teacher-labelled inputs of "
            f"{report['from_pools']} from pools and {report['from_perturbation']} perturbed (dropped "
            f"{report['dropped_duplicates']} duplicates, {report['dropped_overlap']} equal to a train or dev input)"
        )
    console.print(f"{state}: {run.result.global_step} steps{metric}; {kind} saved to [bold]{run.model_dir}[/bold]")


def main() -> None:
    try:
        app()
    except UserError as err:
        print(f"error: {err.message}", file=sys.stderr)
        sys.exit(UserError.exit_code)


if __name__ == "__main__":
    main()
