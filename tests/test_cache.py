"""The teacher-knowledge cache end to end: `kdlab cache`, then training without the teacher.

A tiny random BERT teacher and the SST-2 fixture sentences; selections along length and width, attention maps and
top-k logits are all cached at once, and every cached tensor is compared with what the live teacher gives.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import kdlab
from kdlab.commands.build import load_data, load_teacher, task_spec
from kdlab.config import load_recipe
from kdlab.engine.teacher import LiveTeacher
from kdlab.errors import UserError
from kdlab.knowledge.source import open_cache
from kdlab.knowledge.store import CacheStore, ShardWriter, tmp_dir_for
from kdlab.methods import FeatureMatcher, Objective, Stage

FIXTURES = Path(__file__).parent / "fixtures"

MATCHES = [
    {
        "teacher": "bert.encoder.layer.1",
        "student": "bert.encoder.layer.0",
        "loss": "mse",
        "tokens": "attention_no_sep:4",
        "width": 0.25,
        "width_mask": "importance",
    },
    {
        "teacher": "bert.encoder.layer.3",
        "student": "bert.encoder.layer.1",
        "loss": "mse",
        "tokens": "first:5",
        "width": 0.5,
    },
    {"teacher": "bert.encoder.layer.3", "student": "bert.encoder.layer.1", "loss": "cosine", "tokens": "cls"},
    {
        "teacher": "bert.encoder.layer.1.attention.self",
        "student": "bert.encoder.layer.0.attention.self",
        "loss": "attention_kl",
    },
    {
        "teacher": "bert.encoder.layer.2",
        "student": "bert.encoder.layer.1",
        "loss": "mse",
        "width": 0.5,
        "width_mask": "random",
    },
]


def recipe(teacher: Path, out: Path, cache: Path | None = None, **distill) -> dict:
    spec = {
        "task": {"name": "sst2", "root": str(FIXTURES), "max_length": 32},
        "teacher": {"model": str(teacher)},
        "student": {"kind": "shrink", "layers": [1, 3]},
        "distill": {"method": "internal", "alpha": 0.5, "matches": copy.deepcopy(MATCHES), "logit_topk": 1, **distill},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "lr": 1e-3,
            "log_every_steps": 1,
            "checkpoint_every_steps": None,
            "progress_bar": False,
        },
        "output": {"dir": str(out)},
    }
    if cache is not None:
        spec["cache"] = {"dir": str(cache)}
    return spec


@pytest.fixture(scope="module")
def cached(tiny_teacher_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(teacher folder, cache folder) for the MATCHES recipe, cached once for the module."""
    root = tmp_path_factory.mktemp("cached")
    summary = kdlab.cache(recipe(tiny_teacher_dir, root / "unused", root / "cache"), progress=False)
    assert summary.examples > 0 and summary.bytes > 0
    return tiny_teacher_dir, root / "cache"


def _sources(teacher_dir: Path, cache_dir: Path, **distill):
    """The live teacher and the cache as the trainer would see them, over the same encoded items."""
    r = load_recipe(recipe(teacher_dir, Path("unused"), cache_dir, **distill))
    spec = task_spec(r.task)
    teacher, tokenizer = load_teacher(r, spec, r.distill.uses_attention)
    data = load_data(spec, r.task, tokenizer, r.train.seed)
    matcher, objective = FeatureMatcher(r.distill.matches), Objective(r.distill, spec.regression)
    live = LiveTeacher(teacher, matcher, objective, tokenizer.sep_token_id)
    live.prepare(torch.device("cpu"), contextlib.nullcontext)
    source, widths = open_cache(r, matcher, objective, tokenizer, {"train": data.train}, str(teacher_dir))
    source.prepare(torch.device("cpu"), live.autocast)
    stage = Stage("all", tuple(range(len(MATCHES))), True, 1)
    return live, source, data, stage, widths


def _assert_same_signals(a, b) -> None:
    assert torch.allclose(a.topk[0], b.topk[0], atol=1e-5)
    assert torch.equal(a.topk[1], b.topk[1])
    assert a.feats.keys() == b.feats.keys()
    for name in a.feats:
        x, y = a.feats[name], b.feats[name]
        assert torch.equal(x.token_mask, y.token_mask), name
        real = x.token_mask
        if x.values.dim() == 4:  # attention maps: entries whose query and key are both real
            real = (real[:, None, :, None] & real[:, None, None, :]).expand_as(x.values)
        assert torch.allclose(x.values[real], y.values[real], atol=1e-5), name
        if x.positions is not None:
            assert torch.equal(x.positions[x.token_mask], y.positions[y.token_mask]), name
        if x.dims is not None and x.dims.dim() == 3:
            assert torch.equal(x.dims[x.token_mask], y.dims[y.token_mask]), name


def test_cached_knowledge_equals_the_live_teacher_in_any_order(cached):
    """Round trip: every cached tensor equals the live one; batches in a new order (shuffling) read the right rows."""
    live, source, data, stage, widths = _sources(*cached)
    assert widths == {"match0": 32, "match1": 32, "match2": 32, "match3": 4, "match4": 32}
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train), generator=generator).tolist()
    for start in range(0, 24, 8):
        indices = order[start : start + 8]
        batch = data.collate([data.train[i] for i in indices])
        _assert_same_signals(
            live.signals(stage, batch, indices, "train"), source.signals(stage, batch, indices, "train")
        )


def test_selection_is_applied_to_what_is_stored(cached):
    """The cache stores the selected slice, not the whole feature: 4 tokens x 8 dims, 5 tokens x 16 dims, ..."""
    manifest = CacheStore.open(cached[1]).manifest
    by_kind = {sig.split("|")[1] if "|" in sig else sig: entry for sig, entry in manifest["signals"].items()}
    assert "tokens=attention_no_sep:4,width=importance:0.25" in by_kind
    assert len(by_kind["tokens=first:5,width=uniform:0.5"]["shared_dims"]) == 16
    store = CacheStore.open(cached[1])
    name = by_kind["tokens=attention_no_sep:4,width=importance:0.25"]["name"]
    values = store.read(store.locate([_first_key(cached)]), f"{name}.values")[0]
    assert values.shape[1] == 8 and values.shape[0] <= 4


def _first_key(cached) -> tuple[int, int]:
    from kdlab.knowledge.write import item_key

    r = load_recipe(recipe(cached[0], Path("unused"), cached[1]))
    tokenizer = AutoTokenizer.from_pretrained(cached[0])
    data = load_data(task_spec(r.task), r.task, tokenizer, r.train.seed)
    return item_key(data.train[0])


def _no_teacher_model(monkeypatch) -> None:
    """Any attempt to build or load a classifier's weights, or to run a live teacher, fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was loaded while training from a cache")

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", refuse)
    monkeypatch.setattr(LiveTeacher, "__init__", refuse)


def test_training_from_the_cache_matches_the_live_teacher_without_loading_it(cached, tmp_path, monkeypatch):
    teacher_dir, cache_dir = cached
    live = kdlab.distill(recipe(teacher_dir, tmp_path / "live"))
    with monkeypatch.context() as patch:
        _no_teacher_model(patch)
        from_cache = kdlab.distill(recipe(teacher_dir, tmp_path / "cached", cache_dir))
    assert live.result.global_step == from_cache.result.global_step == 10
    a = load_file(tmp_path / "live" / "student" / "model.safetensors")
    b = load_file(tmp_path / "cached" / "student" / "model.safetensors")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key
    first = {
        run: json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[0]) for run in ("live", "cached")
    }
    for key in ("loss", "kd", "gold", "match0_mse", "match3_attention_kl"):
        assert first["live"][key] == pytest.approx(first["cached"][key], rel=1e-5, abs=1e-7), key


def test_teacher_free_training_with_a_pretrained_student(cached, tmp_path, monkeypatch):
    """No teacher.model at all: a pretrained student (the teacher's size here) trains from the cache alone."""
    teacher_dir, cache_dir = cached
    student_dir = tmp_path / "init"
    shutil.copytree(teacher_dir, student_dir)
    spec = recipe(teacher_dir, tmp_path / "run", cache_dir)
    del spec["teacher"]["model"]
    spec["student"] = {"kind": "pretrained", "model": str(student_dir)}
    monkeypatch.setattr(LiveTeacher, "__init__", lambda *a, **k: (_ for _ in ()).throw(AssertionError("teacher")))
    run = kdlab.distill(spec)
    assert run.result.global_step == 10 and (run.model_dir / "config.json").is_file()


def _distill_error(spec: dict) -> UserError:
    with pytest.raises(UserError) as err:
        kdlab.distill(spec)
    assert not Path(spec["output"]["dir"]).exists(), "nothing may be written before the checks pass"
    return err.value


def test_stale_teacher_tokenizer_or_settings_are_refused(cached, tmp_path):
    teacher_dir, cache_dir = cached
    changed = tmp_path / "changed"
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    with torch.no_grad():
        model.classifier.bias.add_(0.1)
    model.save_pretrained(changed)
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(changed)
    err = _distill_error(recipe(changed, tmp_path / "a", cache_dir))
    assert "stale cache" in err.message and "teacher's weights" in err.message and err.key == "cache.dir"

    spec = recipe(teacher_dir, tmp_path / "b", cache_dir)
    spec["task"]["max_length"] = 16
    assert "max_length" in _distill_error(spec).message

    spec = recipe(teacher_dir, tmp_path / "c", cache_dir)
    spec["cache"]["dtype"] = "float16"
    assert "dtype" in _distill_error(spec).message

    spec = recipe(teacher_dir, tmp_path / "d", cache_dir)
    spec["distill"]["matches"][1]["width"] = 0.75  # a selection the cache does not hold
    err = _distill_error(spec)
    assert "lacks knowledge" in err.message and "width=uniform:0.75" in err.message

    spec = recipe(teacher_dir, tmp_path / "e", cache_dir, logit_topk=None)  # dense logits were not cached
    assert "logits" in _distill_error(spec).message


def test_examples_missing_from_the_cache_are_refused(cached, tmp_path):
    """Augmented or changed data: an example the teacher never saw is an error, never a wrong row."""
    teacher_dir, cache_dir = cached
    train = (FIXTURES / "sst2" / "train.tsv").read_text(encoding="utf-8").rstrip("\n")
    (tmp_path / "train.tsv").write_text(train + "\na sentence the teacher never read\t1\n", encoding="utf-8")
    spec = recipe(teacher_dir, tmp_path / "run", cache_dir)
    spec["task"]["train"] = str(tmp_path / "train.tsv")
    err = _distill_error(spec)
    assert "1 of" in err.message and "not in the cache" in err.message


def test_a_corrupted_shard_is_refused_before_training(cached, tmp_path):
    teacher_dir, cache_dir = cached
    broken = tmp_path / "cache"
    shutil.copytree(cache_dir, broken)
    shard = sorted((broken / "shards").iterdir())[0]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    err = _distill_error(recipe(teacher_dir, tmp_path / "run", broken))
    assert shard.name in err.message


def test_an_interrupted_cache_leaves_nothing_usable(tiny_teacher_dir, tmp_path, monkeypatch):
    target = tmp_path / "cache"
    spec = recipe(tiny_teacher_dir, tmp_path / "run", target)
    original = ShardWriter.add
    calls = {"n": 0}

    def crash_after_some(self, key, arrays):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt
        return original(self, key, arrays)

    with monkeypatch.context() as patch:
        patch.setattr(ShardWriter, "add", crash_after_some)
        patch.setattr(kdlab.knowledge.store.ShardWriter, "add", crash_after_some)  # type: ignore[attr-defined]
        with pytest.raises(KeyboardInterrupt):
            kdlab.cache({**spec, "cache": {"dir": str(target), "shard_examples": 8}}, progress=False)
    assert not target.exists() and tmp_dir_for(target).exists()
    with pytest.raises(UserError, match="kdlab cache"):
        CacheStore.open(target)
    assert "kdlab cache" in _distill_error(spec).message
    kdlab.cache(spec, progress=False)  # a new run discards the half-written leftovers
    assert not tmp_dir_for(target).exists() and len(CacheStore.open(target)) > 0


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "kdlab", *args], capture_output=True, text=True, env=env, timeout=600)


def test_cli_cache_errors_exit_2(cached, tmp_path):
    teacher_dir, cache_dir = cached
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(teacher_dir, tmp_path / "run", cache_dir)))
    exists = run_cli("cache", str(path))
    assert exists.returncode == 2 and "already exists" in exists.stderr and "Traceback" not in exists.stderr
    no_dir = run_cli("cache", str(path), "--set", "cache.dir=null")
    assert no_dir.returncode == 2 and "cache.dir" in no_dir.stderr
    nothing = run_cli("distill", str(path), "--set", f"cache.dir={tmp_path / 'nowhere'}")
    assert nothing.returncode == 2 and "kdlab cache" in nothing.stderr
    alone = run_cli("cache", str(path), "--set", "distill.method=none", "--set", "distill.matches=[]")
    assert alone.returncode == 2 and "no teacher knowledge to cache" in alone.stderr


@pytest.mark.slow
def test_two_processes_write_one_cache(cached, tmp_path):
    """Under DDP each process writes its own shards; the merged cache holds the same knowledge as one process's."""
    teacher_dir, single = cached
    path = tmp_path / "recipe.yaml"
    spec = recipe(teacher_dir, tmp_path / "run", tmp_path / "cache")
    spec["train"]["eval_batch_size"] = 16  # several teacher batches, so both processes write
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", "29519", "-m", "kdlab", "cache", str(path)]
    done = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = CacheStore.open(tmp_path / "cache")
    one = CacheStore.open(single)
    assert two.manifest["ranks"] == [0, 1] and len({s["file"][:2] for s in two.manifest["shards"]}) == 2
    assert len(two) == len(one)
    two.verify()
    live, source, data, stage, _ = _sources(teacher_dir, tmp_path / "cache")
    indices = list(range(8))
    batch = data.collate([data.train[i] for i in indices])
    _assert_same_signals(live.signals(stage, batch, indices, "train"), source.signals(stage, batch, indices, "train"))
