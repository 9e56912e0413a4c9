"""Identities and digests that tie a teacher cache to what produced it.

A cached row is found by :func:`example_key`, a hash of the tokenized input, never by its position, so shuffling,
filtering or augmenting the data cannot pair a student input with another example's teacher outputs. The other
digests fingerprint the teacher (weights + config), its tokenizer and the set of cached examples, so a stale cache
is detected instead of silently used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdlab.errors import UserError

CHUNK = 1 << 20
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.safetensors.index.json", "*.bin.index.json", "*.pt.index.json")
_INT32 = np.iinfo(np.int32)


def example_key(input_ids: Sequence[int], token_type_ids: Sequence[int] | None = None) -> tuple[int, int]:
    """128-bit blake2b of a tokenized input, as two signed int64s ``(hi, lo)``.

    Ids are hashed as little-endian int32 so the key does not depend on the container (list, numpy, tensor) or its
    integer width. The id count leads the message, which makes the ids/token-types boundary unambiguous.
    """
    ids = _as_int32(input_ids, "input_ids")
    digest = hashlib.blake2b(digest_size=16)
    digest.update(len(ids).to_bytes(8, "little"))
    digest.update(ids.tobytes())
    if token_type_ids is not None:
        types = _as_int32(token_type_ids, "token_type_ids")
        if len(types) != len(ids):
            raise ValueError(f"token_type_ids has {len(types)} entries for {len(ids)} input_ids")
        digest.update(b"\x00types\x00")
        digest.update(types.tobytes())
    hi, lo = np.frombuffer(digest.digest(), dtype="<i8")
    return int(hi), int(lo)


def file_digest(paths: Iterable[Path]) -> str:
    """sha256 over the given files, streamed, in sorted name order; each file's name and size precede its bytes.

    Only the base name is mixed in, so the same files copied to another folder keep their digest.
    """
    files = sorted((Path(p) for p in paths), key=lambda p: (p.name, str(p)))
    digest = hashlib.sha256()
    for path in files:
        name = path.name.encode("utf-8")
        digest.update(len(name).to_bytes(8, "little") + name)
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def model_digest(folder: Path) -> str:
    """Digest of a transformers model folder: ``config.json`` plus every weight file and weight index."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"model folder {folder} does not exist", fix="point to a saved transformers model folder")
    weights = {p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()}
    if not any(p.name.endswith((".safetensors", ".bin", ".pt")) for p in weights):
        raise UserError(
            f"model folder {folder} holds no weights (*.safetensors, *.bin, *.pt)",
            fix="point to a folder written by save_pretrained",
        )
    config = folder / "config.json"
    return file_digest(sorted(weights | ({config} if config.is_file() else set())))


def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 of the vocabulary (token -> id, sorted), the special tokens map and the tokenizer class.

    For fast tokenizers the backend pipeline (normalizer, pre-tokenizer, post-processor) is mixed in too: lower-casing
    or accent stripping changes the ids without changing the vocabulary. Its truncation and padding settings are left
    out because callers toggle them at run time.
    """
    state: dict[str, Any] = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": _plain(tokenizer.special_tokens_map),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = json.loads(backend.to_str())
        for runtime in ("truncation", "padding"):
            pipeline.pop(runtime, None)
        state["backend"] = pipeline
    text = json.dumps(state, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def keys_digest(keys: Iterable[tuple[int, int]]) -> str:
    """Order-independent sha256 of a set of example keys (duplicates count once): the data set's fingerprint."""
    pairs = np.asarray(list(keys), dtype=np.int64).reshape(-1, 2)
    if len(pairs):
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        distinct = np.ones(len(pairs), dtype=bool)
        distinct[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
        pairs = pairs[distinct]
    digest = hashlib.sha256(len(pairs).to_bytes(8, "little"))
    digest.update(pairs.astype("<i8").tobytes())
    return digest.hexdigest()


def _as_int32(values: Sequence[int], name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iub"):
        raise ValueError(f"{name} must be a 1-D sequence of integers, got dtype {array.dtype} and shape {array.shape}")
    array = array.astype(np.int64)
    if array.size and (array.min() < _INT32.min or array.max() > _INT32.max):
        raise ValueError(f"{name} holds values outside int32")
    return array.astype("<i4")


def _plain(value: Any) -> Any:
    """Special tokens map values may be AddedToken objects; their text is what identifies them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
