"""On-disk storage of the teacher cache: per-rank shard writers, an atomic commit, and a memory-mapped reader.

A finished cache folder ``DIR``::

    DIR/manifest.json                      written last: its presence means the cache is complete
    DIR/index/{hi,lo,shard,row}.npy        every example key once, sorted by (hi, lo); read memory-mapped
    DIR/shards/r{rank}-{k:05d}.safetensors one file per flushed shard
    DIR/parts/r{rank}.json, r{rank}-keys.npy   what each rank wrote (merged into the index by :func:`commit`)

A shard holds, for every field ``f``: ``f`` (the examples' values flattened and concatenated, 1-D), ``f.offsets``
(int64 [n+1]) and ``f.shapes`` (int64 [n, ndim]); plus ``keys`` (int64 [n, 2]). Everything is safetensors or .npy
loaded with ``allow_pickle=False``: a cache folder from elsewhere cannot run code.

Every DDP rank writes into the same ``DIR.tmp`` (see :func:`tmp_dir_for`) with its own :class:`ShardWriter`; once all
have closed, rank 0 calls :func:`commit`, which writes the index and the manifest and renames ``DIR.tmp`` to ``DIR``.
A crash at any point leaves either no ``DIR`` or the previous complete one, never a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from kdlab.errors import UserError
from kdlab.io import atomic_write, atomic_write_json
from kdlab.knowledge.fingerprint import example_key as example_key  # re-exported: writers key examples with it

FORMAT = "kdlab-teacher-cache"
VERSION = 1
DTYPES = frozenset({"float32", "float16", "int16", "int32", "int64"})
INDEX_ARRAYS = ("hi", "lo", "shard", "row")
# Keys commit() owns in the manifest; a caller's manifest must not set them.
RESERVED = frozenset(
    {"format", "version", "examples", "rows", "fields", "field_ndim", "shards", "index_sha256", "ranks"}
)
DEFAULT_OPEN_SHARDS = 32
CHUNK = 1 << 20
REBUILD = "re-run `kdlab cache` (overwriting this cache) to rebuild it"
_FIELD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_PART_NAME = re.compile(r"r(\d+)\.json")
_INT64 = np.iinfo(np.int64)


# ---------------------------------------------------------------------------------------------------------- writing


class ShardWriter:
    """Collects one rank's examples and flushes them as safetensors shards into ``tmp_dir/shards``.

    ``fields`` maps each field name to its numpy dtype name; every example must give exactly these fields, each an
    array of any shape (the shape may differ between examples, its number of dimensions may not). Memory use is
    bounded by one shard: about twice ``shard_bytes`` while a shard is flushed.
    """

    def __init__(
        self,
        tmp_dir: Path,
        rank: int,
        fields: dict[str, str],
        shard_examples: int = 2048,
        shard_bytes: int = 256 << 20,
    ) -> None:
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        if shard_examples < 1 or shard_bytes < 1:
            raise ValueError("shard_examples and shard_bytes must be positive")
        self.tmp_dir = Path(tmp_dir)
        self.rank = rank
        self.fields = _check_fields(fields)
        self.shard_examples = shard_examples
        self.shard_bytes = shard_bytes
        self._shards_dir = self.tmp_dir / "shards"
        self._parts_dir = self.tmp_dir / "parts"
        self._shards_dir.mkdir(parents=True, exist_ok=True)
        self._parts_dir.mkdir(parents=True, exist_ok=True)
        # Left-overs of an interrupted run would be mixed into this one: the caller must discard() first.
        if (self._parts_dir / f"r{rank}.json").exists() or any(self._shards_dir.glob(f"r{rank}-*.safetensors")):
            raise RuntimeError(f"{self.tmp_dir} holds files of an earlier run for rank {rank}: discard() it first")
        self._ndim: dict[str, int | None] = dict.fromkeys(self.fields)
        self._seen: set[int] = set()  # (hi, lo) packed into one int: about 100 bytes per example
        self._pending: list[tuple[tuple[int, int], dict[str, np.ndarray]]] = []
        self._pending_bytes = 0
        self._shards: list[dict[str, Any]] = []
        self._keys: list[np.ndarray] = []
        self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # A failed rank writes no part, so commit() refuses the incomplete folder instead of publishing it.
        if exc_type is None:
            self.close()

    def add(self, key: tuple[int, int], arrays: dict[str, Any]) -> bool:
        """Queue one example; False (and nothing stored) if this writer already has ``key``."""
        if self._closed:
            raise RuntimeError("add() after close()")
        hi, lo = _check_key(key)
        packed = (hi << 64) | (lo & 0xFFFF_FFFF_FFFF_FFFF)
        if packed in self._seen:
            return False
        if set(arrays) != set(self.fields):
            missing, extra = sorted(set(self.fields) - set(arrays)), sorted(set(arrays) - set(self.fields))
            raise ValueError(f"example fields do not match the writer's: missing {missing}, unexpected {extra}")
        cast = {name: self._cast(name, arrays[name]) for name in self.fields}
        self._seen.add(packed)
        self._pending.append(((hi, lo), cast))
        self._pending_bytes += sum(a.nbytes for a in cast.values())
        if len(self._pending) >= self.shard_examples or self._pending_bytes >= self.shard_bytes:
            self._flush()
        return True

    def close(self) -> None:
        """Flush the rest and write this rank's part; the part file, written last, marks the rank as done."""
        if self._closed:
            return
        self._flush()
        keys = np.concatenate(self._keys) if self._keys else np.zeros((0, 2), dtype=np.int64)
        _save_npy(self._parts_dir / f"r{self.rank}-keys.npy", keys)
        part = {
            "format": FORMAT,
            "version": VERSION,
            "rank": self.rank,
            "fields": self.fields,
            "field_ndim": self._ndim,
            "examples": len(keys),
            "shards": self._shards,
        }
        atomic_write_json(self._parts_dir / f"r{self.rank}.json", part)
        self._closed = True
        self._seen = set()

    def _cast(self, name: str, value: Any) -> np.ndarray:
        dtype = np.dtype(self.fields[name])
        array = _to_numpy(value)
        if not np.can_cast(array.dtype, dtype, "same_kind"):
            raise ValueError(f"field {name!r}: {array.dtype} values cannot be stored as {dtype} without loss")
        if array.dtype != dtype and array.size and dtype.kind in "iu":
            limits = np.iinfo(dtype)
            if array.min() < limits.min or array.max() > limits.max:
                raise ValueError(f"field {name!r}: values outside the range of {dtype}")
        with np.errstate(over="ignore"):  # overflow is checked below, with a clearer message than numpy's warning
            out = array.astype(dtype, order="C")  # a copy: never keep a caller's (possibly larger) buffer alive
        narrowed = dtype.kind == "f" and dtype.itemsize < array.dtype.itemsize
        if narrowed and np.count_nonzero(np.isinf(out)) > np.count_nonzero(np.isinf(array)):
            raise ValueError(f"field {name!r}: values overflow {dtype}; store it as float32")
        expected = self._ndim[name]
        if expected is None:
            self._ndim[name] = out.ndim
        elif out.ndim != expected:
            raise ValueError(f"field {name!r}: got {out.ndim} dimensions, earlier examples had {expected}")
        return out

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"r{self.rank}-{len(self._shards):05d}.safetensors"
        keys = np.array([key for key, _ in self._pending], dtype=np.int64)
        tensors = {"keys": keys}
        for field in self.fields:
            tensors.update(_pack(field, [arrays[field] for _, arrays in self._pending], self._ndim[field]))
        self._pending, self._pending_bytes = [], 0
        path = self._shards_dir / name
        tmp = path.with_name(f".{name}.tmp")
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(VERSION)})
        sha256, size = _sha256(tmp, fsync=True)
        os.replace(tmp, path)
        self._shards.append({"file": name, "examples": len(keys), "bytes": size, "sha256": sha256})
        self._keys.append(keys)


def tmp_dir_for(final_dir: Path) -> Path:
    """The temporary sibling every rank writes into: deterministic, so all ranks agree on it without talking."""
    final_dir = Path(os.path.abspath(final_dir))
    return final_dir.with_name(final_dir.name + ".tmp")


def discard(tmp_dir: Path) -> None:
    """Remove a stale or interrupted ``DIR.tmp``; only folders named ``*.tmp`` are removed."""
    tmp_dir = Path(tmp_dir)
    if not tmp_dir.name.endswith(".tmp"):
        raise ValueError(f"refusing to remove {tmp_dir}: not a temporary cache folder (*.tmp)")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)


def check_target(final_dir: Path, overwrite: bool, key: str = "cache.dir") -> None:
    """UserError unless ``final_dir`` may receive a new cache; call it before running the teacher, to fail early.

    An existing folder is only replaced when asked to and when it is empty or a previous cache: a mistyped path with
    overwrite on must not delete someone's data.
    """
    final_dir = Path(final_dir)
    if not final_dir.exists():
        return
    if not overwrite:
        raise UserError(
            f"{final_dir} already exists",
            key=key,
            fix="train from it as it is, choose another folder, or overwrite it (kdlab cache --overwrite)",
        )
    if final_dir.is_dir() and (_is_cache(final_dir) or not any(final_dir.iterdir())):
        return
    raise UserError(
        f"{final_dir} exists and is not a kdlab cache; refusing to replace it",
        key=key,
        fix="choose another folder (overwrite only replaces a previous cache)",
    )


def commit(
    tmp_dir: Path,
    final_dir: Path,
    manifest: dict,
    overwrite: bool = False,
    *,
    world_size: int | None = None,
    key: str = "cache.dir",
) -> dict:
    """Merge every rank's part into the index, write the manifest last, then move ``tmp_dir`` to ``final_dir``.

    Rank 0 only, after every rank has closed its writer. A key stored by several ranks is indexed once (the lowest
    rank's copy). With ``world_size`` the parts of ranks ``0..world_size-1`` are required. Returns the manifest:
    the caller's entries plus the format, counts, fields and shard list.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    check_target(final_dir, overwrite, key)
    clash = sorted(RESERVED & set(manifest))
    if clash:
        raise ValueError(f"manifest keys {clash} are set by commit()")
    parts = _read_parts(tmp_dir, world_size)
    fields, ndim = _merge_fields(parts)

    shards: list[dict[str, Any]] = []
    keys, shard_ids, rows = [], [], []
    for part, part_keys in parts:
        for entry in part["shards"]:
            shard_ids.append(np.full(entry["examples"], len(shards), dtype=np.int32))
            rows.append(np.arange(entry["examples"], dtype=np.int32))
            shards.append({k: entry[k] for k in ("file", "examples", "bytes", "sha256")})
        keys.append(part_keys)
    all_keys = np.concatenate(keys)
    shard_id = np.concatenate(shard_ids) if shard_ids else np.zeros(0, dtype=np.int32)
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)

    # lexsort is stable and parts are in rank order, so the first of equal keys is the lowest rank's.
    order = np.lexsort((all_keys[:, 1], all_keys[:, 0]))
    sorted_keys = all_keys[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = np.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)
    order = order[first]
    index = {"hi": all_keys[order, 0], "lo": all_keys[order, 1], "shard": shard_id[order], "row": row[order]}

    (tmp_dir / "index").mkdir(exist_ok=True)
    index_sha256 = {}
    for name, array in index.items():
        path = tmp_dir / "index" / f"{name}.npy"
        _save_npy(path, np.ascontiguousarray(array))
        index_sha256[name] = _sha256(path)[0]

    final = {
        **manifest,
        "format": FORMAT,
        "version": VERSION,
        "examples": len(order),
        "rows": len(all_keys),
        "ranks": [part["rank"] for part, _ in parts],
        "fields": fields,
        "field_ndim": ndim,
        "shards": shards,
        "index_sha256": index_sha256,
    }
    atomic_write_json(tmp_dir / "manifest.json", final)
    _fsync_dir(tmp_dir)
    _move_into_place(tmp_dir, final_dir)
    return final


# ---------------------------------------------------------------------------------------------------------- reading


class CacheStore:
    """A complete cache opened for reading: only the index is mapped in, values are read per example on demand.

    Open shard handles (and their small offsets/shapes arrays) are kept in a bounded LRU. The store may be handed to
    DataLoader workers: handles are per process and never pickled.
    """

    def __init__(
        self, folder: Path, manifest: dict, key: str = "cache.dir", max_open_shards: int = DEFAULT_OPEN_SHARDS
    ) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self.key = key
        self.max_open_shards = max(1, max_open_shards)
        self._index = _load_index(self.folder, manifest, key)
        self._open: OrderedDict[int, _OpenShard] = OrderedDict()
        self._pid = os.getpid()

    @classmethod
    def open(cls, folder: Path, key: str = "cache.dir", max_open_shards: int = DEFAULT_OPEN_SHARDS) -> CacheStore:
        """Open a complete cache; UserError (naming ``key``) if it is missing, incomplete or unreadable."""
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"cache folder {folder} does not exist", key=key, fix="run `kdlab cache` to build it")
        return cls(folder, _read_manifest(folder, key), key, max_open_shards)

    @property
    def fields(self) -> dict[str, str]:
        return dict(self.manifest["fields"])

    def __len__(self) -> int:
        return int(self.manifest["examples"])

    def verify(self) -> None:
        """Check every shard and index file against the sha256 in the manifest (streamed: bounded memory)."""
        files = [(s["file"], self.folder / "shards" / s["file"], s["sha256"], s["bytes"]) for s in self._shards]
        files += [
            (f"index/{name}.npy", self.folder / "index" / f"{name}.npy", sha, None)
            for name, sha in self.manifest["index_sha256"].items()
        ]
        for label, path, expected, size in files:
            if not path.is_file():
                raise UserError(f"cache file {label} is missing from {self.folder}", key=self.key, fix=REBUILD)
            if (size is not None and path.stat().st_size != size) or _sha256(path)[0] != expected:
                raise UserError(
                    f"cache file {label} in {self.folder} is corrupt (its sha256 differs from the manifest)",
                    key=self.key,
                    fix=REBUILD,
                )

    def locate(self, keys: Sequence[tuple[int, int]]) -> np.ndarray:
        """``[N, 2]`` int64 (shard id, row) for each key; ``(-1, -1)`` where the cache does not hold the key."""
        query = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
        hi, lo = self._index["hi"], self._index["lo"]
        out = np.full((len(query), 2), -1, dtype=np.int64)
        if len(hi) == 0 or len(query) == 0:
            return out
        q_hi, q_lo = query[:, 0], query[:, 1]
        # Binary search on hi narrows each query to the (almost always 0 or 1 long) run of equal hi, then a
        # vectorised binary search on lo inside that run finds the row.
        left = np.searchsorted(hi, q_hi, side="left")
        right = np.searchsorted(hi, q_hi, side="right")
        while True:
            active = left < right
            if not active.any():
                break
            mid = (left + right) // 2
            below = np.zeros(len(query), dtype=bool)
            below[active] = lo[mid[active]] < q_lo[active]
            left = np.where(active & below, mid + 1, left)
            right = np.where(active & ~below, mid, right)
        at = np.minimum(left, len(hi) - 1)
        found = (left < len(hi)) & (hi[at] == q_hi) & (lo[at] == q_lo)
        out[found, 0] = self._index["shard"][at[found]]
        out[found, 1] = self._index["row"][at[found]]
        return out

    def read(self, locations: np.ndarray, field: str) -> list[torch.Tensor]:
        """The stored array of ``field`` for each location, with its original shape and dtype.

        Only the requested rows are read (slices of the memory-mapped shard); each tensor owns its memory, so it
        neither pins a shard mapping nor drags the whole shard along when sent to another process.
        """
        if field not in self.manifest["fields"]:
            raise UserError(
                f"the cache at {self.folder} has no field {field!r}; it holds {sorted(self.manifest['fields'])}",
                key=self.key,
                fix="re-run `kdlab cache` so that it stores the outputs this training needs",
            )
        locs = np.asarray(locations, dtype=np.int64).reshape(-1, 2)
        bad = (locs[:, 0] < 0) | (locs[:, 0] >= len(self._shards)) | (locs[:, 1] < 0)
        if bad.any():
            raise ValueError(f"location {locs[bad][0].tolist()} points to no cached example (missing key?)")
        out = []
        for shard_id, row in locs.tolist():
            values, offsets, shapes = self._shard(shard_id).field(field)
            if row >= len(shapes):
                raise ValueError(f"row {row} is past the end of shard {shard_id}")
            start, end = int(offsets[row]), int(offsets[row + 1])
            out.append(values[start:end].clone().reshape(tuple(shapes[row].tolist())))
        return out

    def close(self) -> None:
        """Drop the open shard handles (they are reopened on demand)."""
        self._open.clear()

    def __getstate__(self) -> dict[str, Any]:
        # Handles are process-bound and a pickled memmap would copy the whole index: reopen both on arrival.
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        state["_index"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index = _load_index(self.folder, self.manifest, self.key)
        self._pid = os.getpid()

    @property
    def _shards(self) -> list[dict[str, Any]]:
        return self.manifest["shards"]

    def _shard(self, shard_id: int) -> _OpenShard:
        if self._pid != os.getpid():  # a forked DataLoader worker must not share its parent's handles
            self._open = OrderedDict()
            self._pid = os.getpid()
        shard = self._open.get(shard_id)
        if shard is not None:
            self._open.move_to_end(shard_id)
            return shard
        entry = self._shards[shard_id]
        shard = _OpenShard(self.folder / "shards" / entry["file"], entry["examples"], self.key)
        self._open[shard_id] = shard
        if len(self._open) > self.max_open_shards:
            self._open.popitem(last=False)
        return shard


class _OpenShard:
    """One memory-mapped shard file and, per field read so far, its slicer and small offsets/shapes arrays."""

    def __init__(self, path: Path, examples: int, key: str) -> None:
        self.path = path
        self.key = key
        self._fields: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
        try:
            self.handle = safe_open(str(path), framework="pt")
            rows = self.handle.get_slice("keys").get_shape()[0]
        except (OSError, SafetensorError) as err:
            raise self._damaged(f"cannot be read ({err})") from err
        if rows != examples:
            raise self._damaged(f"holds {rows} examples, the manifest says {examples}")

    def field(self, name: str) -> tuple[Any, np.ndarray, np.ndarray]:
        cached = self._fields.get(name)
        if cached is None:
            try:
                values = self.handle.get_slice(name)
                offsets = self.handle.get_tensor(f"{name}.offsets").numpy().copy()
                shapes = self.handle.get_tensor(f"{name}.shapes").numpy().copy()
            except SafetensorError as err:
                raise self._damaged(f"lacks field {name!r} ({err})") from err
            cached = self._fields[name] = (values, offsets, shapes)
        return cached

    def _damaged(self, problem: str) -> UserError:
        where = f"cache shard {self.path.name} in {self.path.parent.parent}"
        return UserError(f"{where} {problem}", key=self.key, fix=REBUILD)


# ---------------------------------------------------------------------------------------------------------- helpers


def _check_fields(fields: dict[str, str]) -> dict[str, str]:
    if not fields:
        raise ValueError("a cache needs at least one field")
    checked = {}
    for name, dtype in fields.items():
        if not _FIELD_NAME.fullmatch(name) or name == "keys" or name.endswith((".offsets", ".shapes")):
            raise ValueError(f"invalid field name {name!r}")
        dtype_name = np.dtype(dtype).name
        if dtype_name not in DTYPES:
            raise ValueError(f"field {name!r}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        checked[name] = dtype_name
    return checked


def _check_key(key: tuple[int, int]) -> tuple[int, int]:
    hi, lo = (int(k) for k in key)
    if not (_INT64.min <= hi <= _INT64.max and _INT64.min <= lo <= _INT64.max):
        raise ValueError(f"key {key} is not two int64s")
    return hi, lo


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _pack(field: str, values: list[np.ndarray], ndim: int | None) -> dict[str, np.ndarray]:
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([v.size for v in values], out=offsets[1:])
    shapes = np.array([v.shape for v in values], dtype=np.int64).reshape(len(values), ndim or 0)
    flat = np.concatenate([v.reshape(-1) for v in values])
    return {field: flat, f"{field}.offsets": offsets, f"{field}.shapes": shapes}


def _sha256(path: Path, fsync: bool = False) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if fsync:
            os.fsync(fh.fileno())
    return digest.hexdigest(), size


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save(path) would append ".npy" to the temporary name
            np.save(fh, array, allow_pickle=False)

    atomic_write(path, write)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_cache(folder: Path) -> bool:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _read_parts(tmp_dir: Path, world_size: int | None) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Every closed rank's part in rank order; RuntimeError if a rank has not closed its writer."""
    parts_dir = tmp_dir / "parts"
    found = {}
    for path in parts_dir.glob("r*.json") if parts_dir.is_dir() else ():
        match = _PART_NAME.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    if not found:
        raise RuntimeError(f"{tmp_dir} holds no closed writer: nothing to commit")
    if world_size is not None and sorted(found) != list(range(world_size)):
        raise RuntimeError(f"{tmp_dir}: parts of ranks {sorted(found)}, expected ranks 0..{world_size - 1}")
    parts = []
    listed = set()
    for rank in sorted(found):
        part = json.loads(found[rank].read_text(encoding="utf-8"))
        if part.get("format") != FORMAT or part.get("version") != VERSION:
            raise RuntimeError(f"{found[rank]} was written by another cache format version")
        keys = np.load(parts_dir / f"r{rank}-keys.npy", allow_pickle=False)
        if keys.shape != (sum(s["examples"] for s in part["shards"]), 2):
            raise RuntimeError(f"{found[rank]}: key count does not match its shards")
        for entry in part["shards"]:
            if not (tmp_dir / "shards" / entry["file"]).is_file():
                raise RuntimeError(f"shard {entry['file']} listed by rank {rank} is missing from {tmp_dir}")
            listed.add(entry["file"])
        parts.append((part, keys))
    orphans = sorted({p.name for p in (tmp_dir / "shards").glob("*.safetensors")} - listed)
    if orphans:
        raise RuntimeError(f"shards {orphans[:3]} in {tmp_dir} belong to a rank that did not close its writer")
    return parts


def _merge_fields(parts: list[tuple[dict[str, Any], np.ndarray]]) -> tuple[dict[str, str], dict[str, int | None]]:
    fields = parts[0][0]["fields"]
    ndim: dict[str, int | None] = dict.fromkeys(fields)
    for part, _ in parts:
        if part["fields"] != fields:
            raise RuntimeError(f"rank {part['rank']} wrote fields {part['fields']}, rank 0 wrote {fields}")
        for name, value in part["field_ndim"].items():
            if value is not None and ndim[name] not in (None, value):
                raise RuntimeError(f"field {name!r} has {value} dimensions on rank {part['rank']}, {ndim[name]} before")
            ndim[name] = value if value is not None else ndim[name]
    return fields, ndim


def _move_into_place(tmp_dir: Path, final_dir: Path) -> None:
    """Rename ``tmp_dir`` to ``final_dir``; an old cache is first renamed away, so no reader sees a mix of both."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if not final_dir.exists():
        os.replace(tmp_dir, final_dir)
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.old-", dir=final_dir.parent))
        os.replace(final_dir, old)  # a directory may replace an empty one
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(final_dir.parent)


def _read_manifest(folder: Path, key: str) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file():
        raise UserError(
            f"{folder} is incomplete or not a cache (no manifest.json): an interrupted `kdlab cache`?",
            key=key,
            fix="re-run `kdlab cache`",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the cache manifest {path}: {err}", key=key, fix=REBUILD) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{folder} is not a kdlab teacher cache", key=key, fix="point to a folder built by kdlab cache")
    if manifest.get("version") != VERSION:
        raise UserError(
            f"the cache in {folder} has format version {manifest.get('version')}; this kdlab reads version {VERSION}",
            key=key,
            fix=REBUILD,
        )
    missing = sorted(RESERVED - set(manifest))
    if missing:
        raise UserError(f"the cache manifest {path} lacks {missing}", key=key, fix=REBUILD)
    return manifest


def _load_index(folder: Path, manifest: dict[str, Any], key: str) -> dict[str, np.ndarray]:
    """The four index arrays, memory-mapped: a million keys cost page cache, not process memory."""
    index = {}
    examples = int(manifest["examples"])
    for name in INDEX_ARRAYS:
        path = folder / "index" / f"{name}.npy"
        try:
            # numpy cannot map a zero-length array; an empty one is loaded (it is just a header).
            array = np.load(path, mmap_mode="r" if examples else None, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the cache index {path}: {err}", key=key, fix=REBUILD) from err
        if array.shape != (examples,) or array.dtype.kind != "i":
            raise UserError(f"the cache index {path} does not match the manifest", key=key, fix=REBUILD)
        index[name] = array
    return index
