"""User mistakes on the command line: one clear error, exit status 2, no traceback, nothing written.

Every case runs `kdlab finetune | distill | evaluate | inspect` on a small recipe (tiny random BERT teacher, a few
SST-2 sentences) and checks that the CLI stops with exit status 2 and a message on stderr that starts with
``error:``, names the config key at fault, says how to fix it (a ``fix:`` line) and shows no traceback; that the
trainer never started; and that nothing was written: the current directory (the test's tmp folder, which holds the
recipe, the data and output.dir) is byte-for-byte as it was.

The CLI runs in-process (``kdlab.cli.main`` with a patched ``sys.argv``) to keep the file fast; a few cases also run
as ``python -m kdlab`` in a subprocess and must print exactly the same.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdlab import cli
from kdlab.commands import evaluate as evaluate_command
from kdlab.commands import runs

FIXTURES = Path(__file__).parent / "fixtures"
SRC = Path(__file__).parents[1] / "src"

MATCHES = [
    {"teacher": "bert.encoder.layer.1", "student": "bert.encoder.layer.0", "loss": "mse"},
    {"teacher": "bert.encoder.layer.3", "student": "bert.encoder.layer.1", "loss": "cosine"},
]
ATTENTION_MATCH = {
    "teacher": "bert.encoder.layer.3.attention.self",
    "student": "bert.encoder.layer.1.attention.self",
    "loss": "attention_kl",
}


def distill_recipe(teacher: Path, out: Path) -> dict[str, Any]:
    """A valid recipe: the tiny teacher into a 2-layer student with two intermediate matches."""
    return {
        "task": {"name": "sst2", "root": str(FIXTURES), "max_length": 32, "max_train_examples": 16},
        "teacher": {"model": str(teacher)},
        "student": {"kind": "shrink", "layers": [1, 3]},
        "distill": {"method": "internal", "alpha": 0.5, "matches": [dict(m) for m in MATCHES]},
        "train": {"epochs": 1, "max_steps": 2, "batch_size": 8, "progress_bar": False},
        "output": {"dir": str(out)},
    }


def finetune_recipe(teacher: Path, out: Path) -> dict[str, Any]:
    recipe = distill_recipe(teacher, out)
    del recipe["student"], recipe["distill"]
    return recipe


@dataclass
class Result:
    code: int
    out: str
    err: str


def _no_work(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("work started although the input is wrong")


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root`` with (is_dir, size, mtime_ns): any write, creation or removal changes it."""
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        found[str(path.relative_to(root))] = (path.is_dir(), stat.st_size, stat.st_mtime_ns)
    return found


class Scene:
    """A tmp folder (the current directory) holding a recipe and its output.dir, and the CLI run in-process."""

    def __init__(self, root: Path, teacher: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
        self.root = root
        self.teacher = teacher
        self.out = root / "out"
        self._monkeypatch = monkeypatch
        self._capsys = capsys
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.chdir(root)

    def write(self, recipe: dict[str, Any], name: str = "recipe.yaml") -> str:
        path = self.root / name
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return str(path)

    def distill_recipe(self) -> dict[str, Any]:
        return distill_recipe(self.teacher, self.out)

    def finetune_recipe(self) -> dict[str, Any]:
        return finetune_recipe(self.teacher, self.out)

    def run(self, *args: str) -> Result:
        """``kdlab ARGS`` in this process; returns the exit status and what it printed."""
        self._monkeypatch.setattr(sys, "argv", ["kdlab", *args])
        self._capsys.readouterr()
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:
            code = 0
        out, err = self._capsys.readouterr()
        return Result(code, out, err)

    def fails(self, key: str, *args: str, says: tuple[str, ...] = ()) -> Result:
        """Run ``kdlab ARGS``; assert a clean user error that names ``key``, before any work and any write."""
        self._monkeypatch.setattr(runs, "Trainer", _no_work)
        self._monkeypatch.setattr(runs, "make_accelerator", _no_work)
        self._monkeypatch.setattr(evaluate_command, "evaluate_items", _no_work)
        before = snapshot(self.root)
        out_existed = self.out.exists()
        result = self.run(*args)
        assert_user_error(result, key, *says)
        assert self.out.exists() == out_existed, "output.dir was created"
        assert snapshot(self.root) == before, "files were written, changed or removed"
        return result


def assert_user_error(result: Result, key: str, *says: str) -> None:
    err = result.err
    assert result.code == 2, f"exit status {result.code}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    assert err.startswith("error:"), err
    assert err.count("error:") == 1, err
    # the key as a whole word: "train.epoch" must not be satisfied by "train.epochs"
    assert re.search(rf"(?<![\w.]){re.escape(key)}(?![\w\[])", err), f"{key!r} not named in:\n{err}"
    assert re.search(r"^\s*fix: \S", err, re.MULTILINE), f"no fix: line in:\n{err}"
    for fragment in says:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert result.out == "", result.out


@pytest.fixture
def scene(tmp_path: Path, tiny_teacher_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Scene:
    return Scene(tmp_path, tiny_teacher_dir, monkeypatch, capsys)


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Recipe keys, types and values (through --set and in the YAML)
# ---------------------------------------------------------------------------------------------------------------

OVERRIDE_CASES = [
    # (command, --set value, key named, text in the message)
    ("distill", "train.epoch=1", "train.epoch", "did you mean epochs"),
    ("finetune", "train.epoch=1", "train.epoch", "did you mean epochs"),
    ("distill", "distil.alpha=0.3", "distil", "did you mean distill"),
    ("distill", "train.lr=abc", "train.lr", "'abc'"),
    ("finetune", "train.lr=abc", "train.lr", "'abc'"),
    ("distill", "distill.alpha=2", "distill.alpha", "got 2"),
    ("distill", "task.max_length=0", "task.max_length", "got 0"),
    ("finetune", "task.max_length=0", "task.max_length", "got 0"),
    ("evaluate", "task.max_length=0", "task.max_length", "got 0"),
    ("distill", "distill.matches[1].loss=msee", "distill.matches[1].loss", "unknown loss 'msee'"),
    ("distill", "distill.method=kd", "distill.method", "'kd'"),
    ("distill", "train.epochs", "--set", "no '='"),
    ("finetune", "train.epochs", "--set", "no '='"),
    ("evaluate", "train.epochs", "--set", "no '='"),
    ("distill", "distill.matches[7].loss=mse", "--set", "no item 7"),
]


@pytest.mark.parametrize(("command", "override", "key", "says"), OVERRIDE_CASES)
def test_bad_override(scene: Scene, command: str, override: str, key: str, says: str) -> None:
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    scene.fails(key, command, scene.write(recipe), "--set", override, says=(says,))


def test_unknown_key_in_the_yaml_names_the_list_item(scene: Scene) -> None:
    recipe = scene.distill_recipe()
    recipe["distill"]["matches"][1]["projecton"] = True
    scene.fails("distill.matches[1].projecton", "distill", scene.write(recipe), says=("did you mean projection",))


def test_unknown_loss_in_the_yaml(scene: Scene) -> None:
    recipe = scene.distill_recipe()
    recipe["distill"]["matches"][1]["loss"] = "cosin"
    scene.fails("distill.matches[1].loss", "distill", scene.write(recipe), says=("unknown loss 'cosin'", "cosine"))


@pytest.mark.parametrize("command", ["finetune", "distill", "evaluate"])
def test_missing_recipe_file(scene: Scene, command: str) -> None:
    scene.fails("RECIPE", command, "no/such/recipe.yaml", says=("no/such/recipe.yaml", "does not exist"))


def test_recipe_that_is_not_a_mapping(scene: Scene) -> None:
    path = scene.root / "recipe.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    scene.fails("RECIPE", "distill", str(path))


# ---------------------------------------------------------------------------------------------------------------
# Data: files, columns, labels
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_missing_data_file(scene: Scene, command: str) -> None:
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    missing = scene.root / "data" / "train.tsv"
    scene.fails(
        "task.train", command, scene.write(recipe), "--set", f"task.train={missing}", says=(str(missing), "not exist")
    )


def test_missing_data_file_of_own_task(scene: Scene) -> None:
    recipe = scene.distill_recipe()
    recipe["task"] = {"train": "data/nothing.tsv", "text": "sentence", "label": "label", "max_length": 32}
    scene.fails("task.train", "distill", scene.write(recipe), says=("data/nothing.tsv",))


def test_missing_dev_file_for_evaluate(scene: Scene) -> None:
    recipe = scene.distill_recipe()
    recipe["task"]["dev"] = str(scene.root / "data" / "dev.tsv")
    args = ("evaluate", scene.write(recipe), "--model", str(scene.teacher))
    scene.fails("task.dev", *args, says=("not exist",))


@pytest.mark.parametrize("command", ["finetune", "distill", "evaluate"])
def test_missing_column(scene: Scene, command: str) -> None:
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    args = ["--model", str(scene.teacher)] if command == "evaluate" else []
    scene.fails(
        "task.text", command, scene.write(recipe), "--set", "task.text=review", *args, says=("no column 'review'",)
    )


@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_label_not_in_label_names(scene: Scene, command: str) -> None:
    data = scene.root / "data"
    train = write_tsv(data / "train.tsv", [("good", "pos"), ("bad", "neg"), ("odd", "meh"), ("fine", "pos")])
    dev = write_tsv(data / "dev.tsv", [("nice", "pos"), ("awful", "neg")])
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    recipe["task"] = {
        "train": str(train),
        "dev": str(dev),
        "text": "sentence",
        "label": "label",
        "label_names": ["neg", "pos"],
        "max_length": 32,
    }
    scene.fails("task.label_names", command, scene.write(recipe), says=("'meh'", "row 3"))


# ---------------------------------------------------------------------------------------------------------------
# Models, module paths and shapes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_teacher_folder_does_not_exist(scene: Scene, command: str) -> None:
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    recipe["teacher"]["model"] = "./no/such/teacher"
    scene.fails("teacher.model", command, scene.write(recipe), says=("no such folder: ./no/such/teacher",))


@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_hub_name_while_offline(scene: Scene, command: str) -> None:
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    args = (command, scene.write(recipe), "--set", "teacher.model=someone/tiny-bert")
    scene.fails("teacher.model", *args, says=("'someone/tiny-bert'", "HF_HUB_OFFLINE"))


@pytest.mark.parametrize("side", ["teacher", "student"])
def test_module_path_not_in_model(scene: Scene, side: str) -> None:
    recipe = scene.distill_recipe()
    # one layer past the end: the teacher has layers 0..3, the student 0..1
    recipe["distill"]["matches"][1][side] = "bert.encoder.layer.4" if side == "teacher" else "bert.encoder.layer.2"
    result = scene.fails(f"distill.matches[1].{side}", "distill", scene.write(recipe), says=("no module",))
    other = "student" if side == "teacher" else "teacher"
    assert f"distill.matches[1].{other}" not in result.err
    assert "distill.matches[0]" not in result.err


def test_forgotten_prefix_suggests_the_full_path(scene: Scene) -> None:
    recipe = scene.distill_recipe()
    recipe["distill"]["matches"][0]["student"] = "encoder.layer.0"
    scene.fails("distill.matches[0].student", "distill", scene.write(recipe), says=("bert.encoder.layer.0",))


def narrow_student_recipe(scene: Scene) -> dict[str, Any]:
    """Student of width 16 under a width-32 teacher; match 0 has a projection, match 1 does not."""
    recipe = scene.distill_recipe()
    recipe["student"]["hidden_size"] = 16
    recipe["distill"]["matches"][0]["projection"] = True
    recipe["distill"]["matches"][1]["loss"] = "mse"
    return recipe


def test_widths_differ_without_projection(scene: Scene) -> None:
    recipe = narrow_student_recipe(scene)
    scene.fails(
        "distill.matches[1]", "distill", scene.write(recipe), says=("student 16 vs teacher 32", "projection: true")
    )


def test_widths_differ_with_projection_trains(scene: Scene) -> None:
    """The same recipe with the projection switched on is fine: the error above is really about it."""
    recipe = narrow_student_recipe(scene)
    result = scene.run("distill", scene.write(recipe), "--set", "distill.matches[1].projection=true")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert (scene.out / "student" / "config.json").is_file()
    assert "student saved to" in result.out


@pytest.mark.parametrize("command", ["finetune", "distill", "evaluate"])
def test_max_length_beyond_the_position_embeddings(scene: Scene, command: str) -> None:
    """The tiny teacher has 512 positions: a longer max_length crashed mid-run on long texts (RuntimeError)."""
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    args = ["--model", str(scene.teacher)] if command == "evaluate" else []
    path = scene.write(recipe)
    scene.fails("task.max_length", command, path, "--set", "task.max_length=513", *args, says=("at most 512",))


def test_max_length_at_the_position_limit_passes_the_checks(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the case above: 512 positions do hold max_length 512."""
    monkeypatch.setattr(runs, "Trainer", _no_work)
    with pytest.raises(AssertionError, match="work started"):
        scene.run("finetune", scene.write(scene.finetune_recipe()), "--set", "task.max_length=512")


def test_attention_heads_differ(scene: Scene) -> None:
    recipe = scene.distill_recipe()
    recipe["student"]["num_attention_heads"] = 2
    recipe["distill"]["matches"][1] = dict(ATTENTION_MATCH)
    scene.fails("distill.matches[1]", "distill", scene.write(recipe), says=("attention maps differ", "heads"))


def test_attention_heads_equal_pass_the_checks(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the case above: with the teacher's head count the same match passes every check."""
    recipe = scene.distill_recipe()
    recipe["distill"]["matches"][1] = dict(ATTENTION_MATCH)
    monkeypatch.setattr(runs, "Trainer", _no_work)
    with pytest.raises(AssertionError, match="work started"):
        scene.run("distill", scene.write(recipe))
    assert (scene.out / "recipe.yaml").is_file()  # every check passed: the run claimed its output folder


# ---------------------------------------------------------------------------------------------------------------
# Output folder, --resume, sections, schedules
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_output_dir_already_holds_a_run(scene: Scene, command: str) -> None:
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    (scene.out / "checkpoints" / "step-2").mkdir(parents=True)
    (scene.out / "checkpoints" / "step-2" / "model.safetensors").write_bytes(b"old weights")
    (scene.out / "recipe.yaml").write_text("old: recipe\n", encoding="utf-8")
    # fails() also checks that every file in the old run is left exactly as it was
    scene.fails("output.dir", command, scene.write(recipe), says=(str(scene.out), "--resume", "overwrite"))
    assert (scene.out / "checkpoints" / "step-2" / "model.safetensors").read_bytes() == b"old weights"


@pytest.mark.parametrize("command", ["finetune", "distill"])
@pytest.mark.parametrize("where", ["notes.txt", "notes.txt/run"])
def test_output_dir_at_or_below_a_file(scene: Scene, command: str, where: str) -> None:
    """Used to end in a NotADirectoryError traceback."""
    (scene.root / "notes.txt").write_text("keep me\n", encoding="utf-8")
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    recipe["output"]["dir"] = where
    scene.fails("output.dir", command, scene.write(recipe), says=("'notes.txt' is a file",))
    assert (scene.root / "notes.txt").read_text(encoding="utf-8") == "keep me\n"


@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_resume_with_nothing_to_resume(scene: Scene, command: str) -> None:
    recipe = scene.finetune_recipe() if command == "finetune" else scene.distill_recipe()
    scene.fails("--resume", command, scene.write(recipe), "--resume", says=("nothing to resume",))


def test_resume_into_an_empty_output_dir(scene: Scene) -> None:
    scene.out.mkdir()
    scene.fails("--resume", "distill", scene.write(scene.distill_recipe()), "--resume", says=("nothing to resume",))


@pytest.mark.parametrize("section", ["distill", "student"])
def test_finetune_given_a_distill_recipe(scene: Scene, section: str) -> None:
    recipe = scene.distill_recipe()
    recipe.pop("student" if section == "distill" else "distill")
    scene.fails(section, "finetune", scene.write(recipe), says=("kdlab distill",))


def test_plateau_without_dev_split(scene: Scene) -> None:
    recipe = scene.distill_recipe()
    recipe["task"] = {
        "train": str(FIXTURES / "sst2" / "train.tsv"),
        "text": "sentence",
        "label": "label",
        "label_names": ["0", "1"],
        "max_length": 32,
    }
    recipe["distill"].update(method="pid", stage_until="plateau")
    scene.fails("distill.stage_until", "distill", scene.write(recipe), says=("dev split",))


# ---------------------------------------------------------------------------------------------------------------
# evaluate and inspect
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["./no/such/model", "no/such/model/", "someone/model"])
def test_evaluate_model_pointing_nowhere(scene: Scene, model: str) -> None:
    scene.fails("--model", "evaluate", scene.write(scene.distill_recipe()), "--model", model, says=(model,))


def test_evaluate_before_anything_was_trained(scene: Scene) -> None:
    scene.fails("--model", "evaluate", scene.write(scene.distill_recipe()), says=("no trained model",))


def test_evaluate_folder_without_config(scene: Scene) -> None:
    (scene.root / "empty").mkdir()
    args = ("evaluate", scene.write(scene.distill_recipe()), "--model", "./empty")
    scene.fails("--model", *args, says=("config.json",))


@pytest.mark.parametrize("model", ["./no/such/folder", "someone/model"])
def test_inspect_model_pointing_nowhere(scene: Scene, model: str) -> None:
    scene.fails("MODEL", "inspect", model, says=(model,))


# ---------------------------------------------------------------------------------------------------------------
# The in-process runs above behave like the real command
# ---------------------------------------------------------------------------------------------------------------


def run_subprocess(cwd: Path, *args: str) -> Result:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "kdlab", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )
    return Result(done.returncode, done.stdout, done.stderr)


def test_subprocess_prints_the_same(scene: Scene) -> None:
    recipe = scene.distill_recipe()
    recipe["distill"]["matches"][1]["student"] = "bert.encoder.layer.2"
    path = scene.write(recipe)
    cases = [
        ("distill.matches[1].student", ("distill", path)),
        ("MODEL", ("inspect", "./no/such/folder")),
    ]
    for key, args in cases:
        before = snapshot(scene.root)
        real = run_subprocess(scene.root, *args)
        assert_user_error(real, key)
        assert snapshot(scene.root) == before
        in_process = scene.fails(key, *args)
        assert (in_process.code, in_process.err) == (real.code, real.err)
