"""Image tasks: the IDX reader, the digits split, image models, and CNN teacher -> student runs on sklearn's digits.

Tiny throughout: 8x8 digits, CNNs of width 8 and MLPs of width 16, a few epochs on one torch thread.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import kdlab
from kdlab import cli
from kdlab.commands import images as image_commands
from kdlab.config import TaskConfig
from kdlab.data.images import (
    FASHION_MNIST_ENV,
    collate_images,
    digits_split_indices,
    load_image_data,
    read_idx,
)
from kdlab.errors import UserError
from kdlab.models.images import (
    ImageModelConfig,
    build_image_model,
    image_parameter_count,
    is_image_model,
    load_image_model,
    save_image_model,
)

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = {
    "epochs": 4,
    "batch_size": 32,
    "lr": 3.0e-3,
    "warmup_ratio": 0.0,
    "progress_bar": False,
    "checkpoint_every_steps": None,
    "log_every_steps": 10,
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_idx(path: Path, array: np.ndarray, compress: bool = True, magic: int | None = None) -> Path:
    """An IDX file of unsigned bytes, as the MNIST distributions write them."""
    header = struct.pack(">I", magic if magic is not None else 0x0800 + array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


# ---------------------------------------------------------------------------------------------------- IDX files
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    suffix = ".gz" if compress else ""
    got_images = read_idx(write_idx(tmp_path / f"images{suffix}", images, compress), ndim=3)
    got_labels = read_idx(write_idx(tmp_path / f"labels{suffix}", labels, compress), ndim=1)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_idx_bad_magic_truncated_or_not_gzip_is_a_user_error(tmp_path):
    images = np.zeros((2, 3, 3), dtype=np.uint8)
    bad = write_idx(tmp_path / "bad-magic.gz", images, magic=0x0801)  # says 1 dimension
    with pytest.raises(UserError, match=r"bad-magic\.gz.*magic number"):
        read_idx(bad, ndim=3)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(gzip.decompress(write_idx(short, images).read_bytes())[:-1]))
    with pytest.raises(UserError, match=r"short\.gz.*truncated"):
        read_idx(short, ndim=3)
    plain = tmp_path / "plain.gz"
    plain.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match=r"plain\.gz"):
        read_idx(plain, ndim=3)


def fake_fashion_mnist(root: Path, train: int = 12, test: int = 5) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        write_idx(root / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(count, 28, 28)))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return root


def test_fashion_mnist_reads_its_idx_files_normalised_and_subsets_them(tmp_path):
    root = fake_fashion_mnist(tmp_path)
    data = load_image_data(TaskConfig(name="fashion-mnist", root=str(root)))
    assert (len(data.train), len(data.dev)) == (12, 5)
    assert data.task.label_names[9] == "Ankle boot"
    raw = read_idx(root / "train-images-idx3-ubyte.gz", ndim=3)
    first = data.train[0]["pixel_values"]
    assert first.shape == (1, 28, 28) and first.dtype == torch.float32
    torch.testing.assert_close(first[0], (torch.from_numpy(raw[0].copy()).float() / 255 - 0.2860) / 0.3530)
    assert [item["labels"] for item in data.dev] == [0, 1, 2, 3, 4]
    batch = collate_images(data.train[:4])
    assert batch["pixel_values"].shape == (4, 1, 28, 28) and batch["labels"].dtype == torch.long

    cfg = TaskConfig(name="fashion-mnist", root=str(root), max_train_examples=5, max_dev_examples=2)
    one, two = load_image_data(cfg), load_image_data(cfg)
    assert (len(one.train), len(one.dev)) == (5, 2)
    assert [item["labels"] for item in one.train] == [item["labels"] for item in two.train]
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(one.train, two.train, strict=True))


def test_missing_fashion_mnist_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    with pytest.raises(UserError) as caught:
        load_image_data(TaskConfig(name="fashion-mnist", root=str(tmp_path / "nowhere")))
    assert caught.value.key == "task.root"
    assert "apt-get install dataset-fashion-mnist" in (caught.value.fix or "")
    monkeypatch.setenv(FASHION_MNIST_ENV, str(fake_fashion_mnist(tmp_path / "env")))
    assert len(load_image_data(TaskConfig(name="fashion-mnist")).train) == 12  # the variable is read


# ---------------------------------------------------------------------------------------------------- digits
def test_digits_split_is_fixed_and_disjoint():
    from sklearn.datasets import load_digits

    train, dev = digits_split_indices(1797)
    again_train, again_dev = digits_split_indices(1797)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(dev, again_dev)
    assert (len(train), len(dev)) == (1438, 359)
    assert not set(train.tolist()) & set(dev.tolist())
    assert sorted(train.tolist() + dev.tolist()) == list(range(1797))
    data = load_image_data(TaskConfig(name="digits"))
    target = load_digits().target
    assert [item["labels"] for item in data.dev] == target[dev].tolist()
    assert data.train[0]["pixel_values"].shape == (1, 8, 8)
    assert abs(float(torch.stack([i["pixel_values"] for i in data.train]).mean())) < 0.05  # about normalised


# ---------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize(("kind", "blocks"), [("cnn", 3), ("cnn", 2), ("mlp", 2)])
def test_image_model_save_load_gives_identical_logits(tmp_path, kind, blocks):
    torch.manual_seed(0)
    config = ImageModelConfig(kind, 4, 10, (1, 8, 8), blocks, [str(d) for d in range(10)])
    model = build_image_model(config)
    pixels = torch.randn(6, 1, 8, 8)
    model.train()
    model(pixel_values=pixels)  # moves the BatchNorm running statistics away from their initial values
    model.eval()
    save_image_model(model, tmp_path / "m")
    assert is_image_model(tmp_path / "m") and not is_image_model(tmp_path)
    loaded = load_image_model(tmp_path / "m")
    assert loaded.config == config
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
    assert image_parameter_count(config) == sum(p.numel() for p in model.parameters())
    assert model(pixel_values=pixels).logits.shape == (6, 10)


def test_parameter_counts_shrink_with_width():
    counts = [image_parameter_count(ImageModelConfig("cnn", w, 10, (1, 28, 28))) for w in (16, 8, 4)]
    assert counts[0] > counts[1] > counts[2]
    # conv 1->4 (36) + BN (8) + conv 4->8 (288) + BN (16) + linear on the flattened 8x7x7 map (392*10 + 10)
    assert counts[2] == 36 + 8 + 288 + 16 + 8 * 7 * 7 * 10 + 10


# ---------------------------------------------------------------------------------------------------- runs
def run_cli(*args: str) -> subprocess.CompletedProcess:
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "kdlab", *args], capture_output=True, text=True, env=env, timeout=300)


def best_dev(out: Path) -> float:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return max(r["accuracy"] for r in records if r.get("split") == "dev")


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    """A CNN teacher (3 blocks, width 8) trained from scratch on the digits through `kdlab finetune`."""
    root = tmp_path_factory.mktemp("digits")
    recipe = {
        "task": {"name": "digits"},
        "teacher": {"model": "cnn", "width": 8},
        "train": TRAIN,
        "output": {"dir": str(root / "teacher")},
    }
    (root / "teacher.yaml").write_text(yaml.safe_dump(recipe))
    done = run_cli("finetune", str(root / "teacher.yaml"))
    assert done.returncode == 0, done.stderr
    assert "model saved to" in done.stdout
    return root / "teacher"


@pytest.mark.slow
def test_cli_finetune_cnn_teacher_on_digits(digits_teacher):
    assert best_dev(digits_teacher) > 0.8
    model = load_image_model(digits_teacher / "model")
    assert model.config.kind == "cnn" and model.config.blocks == 3 and model.config.width == 8


def student_recipe(teacher: Path, out: Path, kind: str = "mlp", **distill: Any) -> dict[str, Any]:
    return {
        "task": {"name": "digits"},
        "teacher": {"model": str(teacher / "model")},
        "student": {"kind": kind, "width": 16 if kind == "mlp" else 4},
        "distill": {"method": "vanilla", "temperature": 4.0, "alpha": 0.9, **distill},
        "train": TRAIN,
        "output": {"dir": str(out)},
    }


@pytest.mark.slow
def test_cli_distill_mlp_student_with_vanilla_kd_then_evaluate(digits_teacher, tmp_path):
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(student_recipe(digits_teacher, tmp_path / "student")))
    done = run_cli("distill", str(tmp_path / "student.yaml"))
    assert done.returncode == 0, done.stderr
    accuracy = best_dev(tmp_path / "student")
    assert accuracy > 0.6  # chance is 0.1
    student = load_image_model(tmp_path / "student" / "student")
    assert student.config.kind == "mlp" and student.config.width == 16
    report = kdlab.evaluate(str(tmp_path / "student.yaml"))  # `kdlab evaluate`, in this process
    assert report.metrics["accuracy"] == pytest.approx(accuracy)
    assert report.parameters == 64 * 16 + 16 + 16 * 10 + 10


@pytest.mark.slow
@pytest.mark.parametrize(
    "distill",
    [
        {"method": "annealing", "tau_max": 4, "hard_epochs": 1},
        {"method": "online", "online": {"peers": 2}},
        {"method": "vanilla", "teachers": ["SELF"]},
        {"method": "none"},
    ],
    ids=["annealing", "online", "two-teachers", "alone"],
)
def test_every_image_method_trains_a_cnn_student(digits_teacher, tmp_path, distill):
    if distill.get("teachers"):
        distill = {**distill, "teachers": [str(digits_teacher / "model")]}
    recipe = student_recipe(digits_teacher, tmp_path / "run", kind="cnn", **distill)
    run = kdlab.distill(recipe)
    assert run.result.finished and run.result.best_metric > 0.3
    assert load_image_model(run.model_dir).config.kind == "cnn"
    if distill["method"] == "online":
        assert is_image_model(tmp_path / "run" / "peers" / "peer-1")


# ---------------------------------------------------------------------------------------------------- user errors
def _no_work(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("work started although the input is wrong")


def cli_fails(tmp_path: Path, monkeypatch, capsys, command: str, recipe: dict, key: str, says: str) -> None:
    """``kdlab COMMAND recipe`` exits 2 naming ``key`` and a fix, before training and without writing output."""
    monkeypatch.setattr(image_commands, "Trainer", _no_work)
    monkeypatch.setattr(image_commands, "make_accelerator", _no_work)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(sys, "argv", ["kdlab", command, str(path)])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    err = capsys.readouterr().err
    assert caught.value.code == 2, err
    assert err.startswith(f"error: {key}:"), err
    assert "fix:" in err and says in err, err
    assert not (tmp_path / "out").exists()


def image_recipe(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    recipe = {
        "task": {"name": "digits"},
        "teacher": {"model": str(tmp_path / "teacher")},
        "student": {"kind": "cnn", "width": 4},
        "train": TRAIN,
        "output": {"dir": str(tmp_path / "out")},
    }
    for name, values in sections.items():
        recipe[name] = {**recipe.get(name, {}), **values}
    return recipe


MATCH = {"teacher": "blocks.1", "student": "blocks.1", "loss": "mse"}


@pytest.mark.parametrize(
    ("command", "sections", "key", "says"),
    [
        ("distill", {"distill": {"method": "internal", "matches": [MATCH]}}, "distill.matches", "outputs only"),
        ("distill", {"task": {"name": "fashion-mnist", "root": "/nowhere"}}, "task.root", "apt-get install"),
        ("distill", {"student": {"kind": "shrink"}}, "student.kind", "cnn or mlp"),
        ("distill", {"student": {"kind": "mlp", "width": None}}, "student.width", "width"),
        ("distill", {"student": {"lstm_layers": 2}}, "student.lstm_layers", "text students"),
        ("distill", {"cache": {"dir": "cache"}}, "cache.dir", "no cache"),
        ("distill", {"teacher": {"model": "cnn"}}, "teacher.model", "trained teacher"),
        ("distill", {}, "teacher.model", "no such model folder"),
        ("distill", {"task": {"max_length": 32}}, "task.max_length", "does not apply"),
        ("finetune", {"teacher": {"model": "cnn"}}, "teacher.width", "width"),
    ],
    ids=[
        "matches",
        "no-fashion-mnist",
        "text-student",
        "no-width",
        "text-student-key",
        "cache",
        "untrained-teacher",
        "missing-teacher",
        "text-task-key",
        "finetune-no-width",
    ],
)
def test_image_user_errors(tmp_path, monkeypatch, capsys, command, sections, key, says):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    recipe = image_recipe(tmp_path, **sections)
    if command == "finetune":
        del recipe["student"]
    cli_fails(tmp_path, monkeypatch, capsys, command, recipe, key, says)


def test_image_student_on_a_text_task_is_refused(tmp_path, monkeypatch, capsys):
    recipe = {
        "task": {"name": "sst2", "root": str(FIXTURES)},
        "teacher": {"model": "minilm"},
        "student": {"kind": "cnn", "width": 4},
        "output": {"dir": str(tmp_path / "out")},
    }
    cli_fails(tmp_path, monkeypatch, capsys, "distill", recipe, "student.kind", "image student")
