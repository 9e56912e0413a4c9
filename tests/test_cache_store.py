"""The teacher-cache storage layer: shard writers, atomic commit, memory-mapped reads, fingerprints."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from kdlab.errors import UserError
from kdlab.knowledge import store as store_module
from kdlab.knowledge.fingerprint import example_key, keys_digest, model_digest, tokenizer_digest
from kdlab.knowledge.store import CacheStore, ShardWriter, commit, discard, tmp_dir_for

FIELDS = {"logits": "float32", "hidden": "float16", "ids": "int64", "mask": "int16", "score": "int32"}


def make_examples(count: int, seed: int = 0) -> list[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    """Variable-shaped examples, some empty, keyed by the content of random token ids."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(count):
        length = int(rng.integers(0, 12))
        ids = rng.integers(0, 30_000, size=length + 1)
        arrays = {
            "logits": rng.standard_normal((length, 3)).astype(np.float32),
            "hidden": rng.standard_normal((length, 4, 2)).astype(np.float16),
            "ids": ids,
            "mask": rng.integers(-5, 5, size=(length, length)).astype(np.int16),
            "score": np.int32(rng.integers(-1000, 1000)),  # 0-dimensional
        }
        examples.append((example_key(ids), arrays))
    return examples


def write_rank(tmp: Path, rank: int, examples, shard_examples: int = 16, fields=FIELDS) -> list[bool]:
    writer = ShardWriter(tmp, rank, fields, shard_examples=shard_examples)
    added = [writer.add(key, arrays) for key, arrays in examples]
    writer.close()
    return added


def build(final: Path, examples, ranks: int = 2, overwrite: bool = False, **manifest) -> dict:
    tmp = tmp_dir_for(final)
    for rank in range(ranks):
        write_rank(tmp, rank, examples[rank::ranks])
    return commit(tmp, final, manifest, overwrite=overwrite, world_size=ranks)


def assert_same(got: torch.Tensor, expected: np.ndarray, dtype: str) -> None:
    want = torch.from_numpy(np.array(expected, dtype=dtype))  # np.array keeps 0-d arrays 0-d
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want)


def test_round_trip_two_ranks_shuffled(tmp_path: Path) -> None:
    examples = make_examples(300)
    final = tmp_path / "cache"
    manifest = build(final, examples, ranks=2, note="kept")

    assert not tmp_dir_for(final).exists()
    assert manifest["note"] == "kept" and manifest["examples"] == 300
    assert manifest["fields"] == FIELDS
    assert len(manifest["shards"]) == 2 * 10  # 150 examples per rank, 16 per shard
    assert {s["file"][:3] for s in manifest["shards"]} == {"r0-", "r1-"}

    store = CacheStore.open(final)
    store.verify()
    assert len(store) == 300
    order = np.random.default_rng(1).permutation(len(examples))
    locations = store.locate([examples[i][0] for i in order])
    assert (locations >= 0).all()
    for field, dtype in FIELDS.items():
        got = store.read(locations, field)
        for tensor, i in zip(got, order, strict=True):
            assert_same(tensor, examples[i][1][field], dtype)


def test_writer_casts_and_accepts_tensors(tmp_path: Path) -> None:
    final = tmp_path / "cache"
    tmp = tmp_dir_for(final)
    writer = ShardWriter(tmp, 0, {"x": "float16", "n": "int16"})
    values = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    assert writer.add((1, 2), {"x": values, "n": np.arange(4, dtype=np.int64)})
    with pytest.raises(ValueError, match="missing"):
        writer.add((3, 4), {"x": np.zeros(2)})
    with pytest.raises(ValueError, match="without loss"):
        writer.add((3, 4), {"x": np.zeros((1, 1)), "n": np.zeros(1, dtype=np.float32)})
    with pytest.raises(ValueError, match="range of int16"):
        writer.add((3, 4), {"x": np.zeros((1, 1)), "n": np.array([1 << 20])})
    with pytest.raises(ValueError, match="overflow float16"):
        writer.add((3, 4), {"x": np.full((1, 1), 1e6), "n": np.zeros(1, dtype=np.int16)})
    with pytest.raises(ValueError, match="dimensions"):
        writer.add((3, 4), {"x": np.zeros(3), "n": np.zeros(1, dtype=np.int16)})
    writer.close()
    commit(tmp, final, {})
    store = CacheStore.open(final)
    [x], [n] = (store.read(store.locate([(1, 2)]), f) for f in ("x", "n"))
    assert_same(x, values.float().numpy(), "float16")
    assert_same(n, np.arange(4), "int16")


def test_duplicates_within_and_across_ranks_stored_once(tmp_path: Path) -> None:
    examples = make_examples(40)
    final = tmp_path / "cache"
    tmp = tmp_dir_for(final)
    # rank 0 repeats its own inputs; rank 1 holds half of rank 0's keys with different values
    rank0 = examples[:30] + examples[:5]
    rank1 = [(key, {**arrays, "score": np.int32(-9999)}) for key, arrays in examples[15:30]] + examples[30:]
    assert write_rank(tmp, 0, rank0, shard_examples=7) == [True] * 30 + [False] * 5
    assert all(write_rank(tmp, 1, rank1, shard_examples=7))
    manifest = commit(tmp, final, {}, world_size=2)

    assert manifest["examples"] == 40
    assert manifest["rows"] == 30 + 25  # rank 1's copies stay in its shards, unindexed
    store = CacheStore.open(final)
    assert len(store) == 40
    index = np.stack([np.load(final / "index" / f"{n}.npy", allow_pickle=False) for n in ("hi", "lo")], axis=1)
    assert len(np.unique(index, axis=0)) == 40
    scores = store.read(store.locate([key for key, _ in examples[15:30]]), "score")
    assert [int(s) for s in scores] == [int(a["score"]) for _, a in examples[15:30]]  # the lowest rank's copy


def test_missing_keys_locate_to_minus_one(tmp_path: Path) -> None:
    examples = make_examples(50)
    final = tmp_path / "cache"
    build(final, examples)
    store = CacheStore.open(final)
    present = examples[7][0]
    near = (present[0], present[1] + 1)  # same hi: found only by the search on lo
    queries = [present, example_key([999_999]), near, (-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1)]
    locations = store.locate(queries)
    assert locations.shape == (5, 2) and locations.dtype == np.int64
    assert (locations[0] >= 0).all()
    assert (locations[1:] == -1).all()
    assert store.locate([]).shape == (0, 2)
    with pytest.raises(ValueError, match="no cached example"):
        store.read(locations, "ids")


def test_same_hi_keys_are_told_apart(tmp_path: Path) -> None:
    final = tmp_path / "cache"
    tmp = tmp_dir_for(final)
    writer = ShardWriter(tmp, 0, {"v": "int64"}, shard_examples=3)
    keys = [(5, lo) for lo in (9, -3, 0, 2**63 - 1, -(2**63))] + [(-1, 0), (6, 0)]
    for n, key in enumerate(keys):
        writer.add(key, {"v": np.array([n])})
    writer.close()
    commit(tmp, final, {})
    store = CacheStore.open(final)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(keys))
    got = store.read(store.locate([keys[i] for i in order]), "v")
    assert [int(t[0]) for t in got] == order.tolist()
    assert (store.locate([(5, 1), (5, 10), (4, 9)]) == -1).all()


def test_verify_names_corrupt_or_missing_shard(tmp_path: Path) -> None:
    final = tmp_path / "cache"
    manifest = build(final, make_examples(100))
    victim = manifest["shards"][3]["file"]
    path = final / "shards" / victim
    data = bytearray(path.read_bytes())
    data[len(data) - 10] ^= 0x01  # a value byte, not the header: the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=re.escape(victim)) as err:
        CacheStore.open(final).verify()
    assert "corrupt" in err.value.message and "kdlab cache" in err.value.message

    path.unlink()
    with pytest.raises(UserError, match=re.escape(f"{victim} is missing")):
        CacheStore.open(final).verify()
    store = CacheStore.open(final)
    shard_id = manifest["shards"].index(next(s for s in manifest["shards"] if s["file"] == victim))
    with pytest.raises(UserError, match=re.escape(victim)):
        store.read(np.array([[shard_id, 0]]), "ids")


def test_verify_detects_corrupt_index(tmp_path: Path) -> None:
    final = tmp_path / "cache"
    build(final, make_examples(20))
    path = final / "index" / "row.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=re.escape("index/row.npy")):
        CacheStore.open(final).verify()


def test_interrupted_write_leaves_no_cache_and_rerun_succeeds(tmp_path: Path) -> None:
    examples = make_examples(60)
    final = tmp_path / "cache"
    tmp = tmp_dir_for(final)
    writer = ShardWriter(tmp, 0, FIELDS, shard_examples=8)
    for key, arrays in examples:
        writer.add(key, arrays)
    assert len(list((tmp / "shards").glob("*.safetensors"))) == 7  # flushed, but the run dies before close/commit

    assert not final.exists()
    with pytest.raises(UserError, match="does not exist"):
        CacheStore.open(final)
    with pytest.raises(UserError, match="incomplete or not a cache") as err:
        CacheStore.open(tmp)
    assert err.value.key == "cache.dir" and "re-run" in err.value.message
    with pytest.raises(RuntimeError, match="nothing to commit"):
        commit(tmp, final, {})
    with pytest.raises(RuntimeError, match="earlier run"):
        ShardWriter(tmp, 0, FIELDS)

    # one rank closed, the other died: its orphan shards stop the commit
    write_rank(tmp, 1, examples[:10])
    with pytest.raises(RuntimeError, match="did not close"):
        commit(tmp, final, {})
    with pytest.raises(RuntimeError, match="expected ranks"):
        commit(tmp, final, {}, world_size=3)
    assert not final.exists()

    with pytest.raises(ValueError, match="refusing"):
        discard(final)
    discard(tmp)
    assert not tmp.exists()
    build(final, examples)
    assert len(CacheStore.open(final)) == 60


def test_commit_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "cache"
    old, new = make_examples(30, seed=1), make_examples(20, seed=2)
    build(final, old, run="old")
    with pytest.raises(UserError, match="already exists") as err:
        build(final, new, run="new")
    assert err.value.key == "cache.dir"
    assert CacheStore.open(final).manifest["run"] == "old"  # the refused run changed nothing

    discard(tmp_dir_for(final))
    build(final, new, overwrite=True, run="new")
    store = CacheStore.open(final)
    assert store.manifest["run"] == "new" and len(store) == 20
    assert (store.locate([key for key, _ in old]) == -1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no temporary or old folder left behind

    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(UserError, match="not a kdlab cache"):
        build(precious, new, overwrite=True)
    assert (precious / "thesis.txt").is_file()


def test_open_rejects_bad_manifests(tmp_path: Path) -> None:
    final = tmp_path / "cache"
    build(final, make_examples(10))
    manifest_path = final / "manifest.json"
    manifest = json.loads(manifest_path.read_text())

    manifest_path.write_text(json.dumps({**manifest, "version": 999}))
    with pytest.raises(UserError, match="format version 999"):
        CacheStore.open(final, key="distill.cache")
    manifest_path.write_text("{not json")
    with pytest.raises(UserError, match="cannot read the cache manifest") as err:
        CacheStore.open(final, key="distill.cache")
    assert err.value.key == "distill.cache"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="no field 'nope'"):
        CacheStore.open(final).read(np.zeros((1, 2), dtype=np.int64), "nope")


def test_files_load_without_pickle(tmp_path: Path) -> None:
    final = tmp_path / "cache"
    build(final, make_examples(40))
    npy = sorted(final.rglob("*.npy"))
    assert {p.parent.name for p in npy} == {"index", "parts"}
    for path in npy:
        array = np.load(path, allow_pickle=False)
        assert array.dtype.kind == "i"
    for path in sorted((final / "shards").glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as handle:
            names = set(handle.keys())
            assert "keys" in names and {f"{f}.offsets" for f in FIELDS} <= names
            keys = handle.get_tensor("keys")
            assert keys.dtype == np.int64 and keys.shape[1] == 2
    assert not list(final.rglob("*.pt")) and not list(final.rglob("*.pkl"))


class _Spy:
    """Wraps safe_open to count the bytes the store pulls out of shard files, and through which call."""

    def __init__(self) -> None:
        self.whole = {}  # name -> bytes, via get_tensor
        self.sliced = 0  # bytes, via get_slice

    def open(self, *args, **kwargs):
        return _SpyHandle(_REAL_SAFE_OPEN(*args, **kwargs), self)


class _SpyHandle:
    def __init__(self, handle, spy: _Spy) -> None:
        self._handle, self._spy = handle, spy

    def get_tensor(self, name: str):
        tensor = self._handle.get_tensor(name)
        self._spy.whole[name] = self._spy.whole.get(name, 0) + tensor.nbytes
        return tensor

    def get_slice(self, name: str):
        return _SpySlice(self._handle.get_slice(name), self._spy)

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


class _SpySlice:
    def __init__(self, view, spy: _Spy) -> None:
        self._view, self._spy = view, spy

    def __getitem__(self, index):
        tensor = self._view[index]
        self._spy.sliced += tensor.nbytes
        return tensor

    def __getattr__(self, name: str):
        return getattr(self._view, name)


_REAL_SAFE_OPEN = store_module.safe_open


def test_reading_a_batch_does_not_load_whole_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    width, count, per_shard = 256, 20_000, 2_500
    final = tmp_path / "cache"
    tmp = tmp_dir_for(final)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((count, width), dtype=np.float32)
    writer = ShardWriter(tmp, 0, {"values": "float32"}, shard_examples=per_shard)
    for i in range(count):
        writer.add((i, -i), {"values": values[i]})
    writer.close()
    commit(tmp, final, {})
    shard_bytes = per_shard * width * 4

    spy = _Spy()
    monkeypatch.setattr(store_module, "safe_open", spy.open)
    store = CacheStore.open(final)
    assert len(pickle.dumps(store)) < 64 << 10  # DataLoader workers get no copy of the index
    picks = rng.choice(count, size=32, replace=False)
    locations = store.locate([(int(i), -int(i)) for i in picks])
    assert len(set(locations[:, 0].tolist())) >= 6  # the batch spans most shards

    tracemalloc.start()
    batch = store.read(locations, "values")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    for tensor, i in zip(batch, picks, strict=True):
        assert torch.equal(tensor, torch.from_numpy(values[i]))
        assert tensor.untyped_storage().nbytes() == tensor.nbytes  # owns its bytes: no view of a shard
    assert "values" not in spy.whole  # never the whole value tensor ...
    assert spy.sliced == sum(t.nbytes for t in batch)  # ... only the requested rows
    touched = len(set(locations[:, 0].tolist()))
    assert sum(spy.whole.values()) < touched * shard_bytes / 20  # just offsets/shapes of the touched shards
    assert peak < shard_bytes / 4  # Python-side allocations (numpy, bytes) stay far below one shard


def test_model_digest(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 8}))
    save_file({"w": np.arange(64, dtype=np.float32)}, str(model / "model.safetensors"))
    (model / "README.md").write_text("ignored")
    base = model_digest(model)
    assert len(base) == 64

    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(model, copy)
    (copy / "README.md").write_text("still ignored")
    assert model_digest(copy) == base

    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    assert model_digest(copy) != base

    shutil.rmtree(copy)
    shutil.copytree(model, copy)
    (copy / "config.json").write_text(json.dumps({"hidden_size": 16}))
    assert model_digest(copy) != base

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no weights"):
        model_digest(empty)
    with pytest.raises(UserError, match="does not exist"):
        model_digest(tmp_path / "absent")


def test_tokenizer_digest(tmp_path: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s"]) + "\n")
    first = tokenizer_digest(BertTokenizerFast(vocab_file=str(vocab)))
    again = BertTokenizerFast(vocab_file=str(vocab))
    assert tokenizer_digest(again) == first
    again.backend_tokenizer.enable_truncation(max_length=4)  # a run-time setting, not part of the identity
    assert tokenizer_digest(again) == first

    grown = BertTokenizerFast(vocab_file=str(vocab))
    grown.add_tokens(["brandnew"])
    assert tokenizer_digest(grown) != first
    cased = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=False)
    assert tokenizer_digest(cased) != first


def test_keys_and_example_keys() -> None:
    keys = [example_key([i, i + 1]) for i in range(50)]
    shuffled = [keys[i] for i in np.random.default_rng(0).permutation(50)]
    assert keys_digest(shuffled) == keys_digest(keys) == keys_digest(keys + keys[:5])
    assert keys_digest(keys[:-1]) != keys_digest(keys)
    assert keys_digest([]) != keys_digest(keys[:1])

    ids = [101, 7592, 2088, 102]
    key = example_key(ids)
    assert all(isinstance(k, int) and -(2**63) <= k < 2**63 for k in key)
    assert example_key(np.array(ids, dtype=np.int64)) == key == example_key(torch.tensor(ids))
    assert example_key(ids, [0, 0, 0, 0]) != key
    assert example_key(ids, [0, 0, 1, 1]) != example_key(ids, [0, 0, 0, 0])
    assert example_key(ids[:3]) != key
    with pytest.raises(ValueError, match="token_type_ids"):
        example_key(ids, [0])


def test_tmp_dir_for_is_a_deterministic_sibling(tmp_path: Path) -> None:
    final = tmp_path / "a" / "cache"
    assert tmp_dir_for(final) == tmp_dir_for(Path(os.path.relpath(final))) == tmp_path / "a" / "cache.tmp"
