"""Image classification tasks: Fashion-MNIST (IDX files, e.g. Debian's ``dataset-fashion-mnist``) and sklearn's
8x8 digits.

An item is ``{"pixel_values": float tensor [1, H, W], "labels": int}``; pixels are scaled to [0, 1] and
normalised with fixed per-task constants (the training split's mean and standard deviation), so an item does not
depend on which subset a run keeps. Subsets (``task.max_train_examples`` / ``max_dev_examples``) are drawn with
seed 0: every run, whatever its training seed, sees the same images, and teacher and students are compared on the
same data.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import Tensor

from kdlab.config import TaskConfig
from kdlab.errors import UserError

FASHION_MNIST_ENV = "KDLAB_FASHION_MNIST"
"""Environment variable naming the folder with Fashion-MNIST's four IDX files."""
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package puts them."""

FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

IMAGE_TASKS = ("fashion-mnist", "digits")
SUBSET_SEED = 0
DIGITS_DEV_FRACTION = 0.2

# IDX: 2 zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then one big-endian int32 per
# dimension and the values in row-major order. MNIST-style files are ubyte images (3 dims) and labels (1 dim).
_UBYTE = 0x08
_IDX_MAGIC = {3: 0x0803, 1: 0x0801}


@dataclass(frozen=True)
class ImageTask:
    name: str
    label_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # channels, height, width
    mean: float
    std: float
    metrics: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


TASKS = {
    # Mean and std of the 60,000 training images scaled to [0, 1].
    "fashion-mnist": ImageTask("fashion-mnist", FASHION_MNIST_LABELS, (1, 28, 28), mean=0.2860, std=0.3530),
    # Of all 1,797 digits scaled by 1/16 (the split is a permutation of them; the difference is negligible).
    "digits": ImageTask("digits", tuple(str(d) for d in range(10)), (1, 8, 8), mean=0.3053, std=0.3759),
}


_IMAGE_TASK_KEYS = {"name", "root", "max_train_examples", "max_dev_examples"}


@dataclass
class ImageData:
    task: ImageTask
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]


def is_image_task(cfg: TaskConfig) -> bool:
    return (cfg.name or "") in IMAGE_TASKS


def image_task(cfg: TaskConfig) -> ImageTask:
    if cfg.name not in TASKS:
        raise UserError(f"{cfg.name!r} is not an image task", key="task.name", fix=f"use {' or '.join(TASKS)}")
    # Everything else in the task section describes text files and columns.
    extra = changed_keys(cfg, _IMAGE_TASK_KEYS)
    if extra:
        raise UserError(
            f"task.{extra[0]} does not apply to the image task {cfg.name!r}",
            key=f"task.{extra[0]}",
            fix=f"remove task.{extra[0]}; image tasks take task.root, max_train_examples and max_dev_examples",
        )
    if cfg.name == "fashion-mnist":
        fashion_mnist_root(cfg.root)  # missing files: said before any work
    return TASKS[cfg.name]


def changed_keys(section: BaseModel, allowed: set[str]) -> list[str]:
    """Keys of a recipe section outside ``allowed`` whose value is not the default.

    Compared by value, not by which keys were written: the recipe.yaml a run saves spells out every default.
    """
    fields = type(section).model_fields
    return [
        name
        for name, info in fields.items()
        if name not in allowed and getattr(section, name) != info.get_default(call_default_factory=True)
    ]


def load_image_data(cfg: TaskConfig) -> ImageData:
    """The task's train and dev items (dev: Fashion-MNIST's test set; a fixed 20 % of the digits)."""
    task = image_task(cfg)
    if task.name == "fashion-mnist":
        root = fashion_mnist_root(cfg.root)
        train_x, train_y = _read_pair(root, "train")
        dev_x, dev_y = _read_pair(root, "t10k")
    else:
        train_x, train_y, dev_x, dev_y = digits_split()
    train = _items(train_x, train_y, task, cfg.max_train_examples)
    dev = _items(dev_x, dev_y, task, cfg.max_dev_examples)
    return ImageData(task, train, dev)


def collate_images(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "labels": torch.as_tensor([item["labels"] for item in items], dtype=torch.long),
    }


def image_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """What an image model reads from a batch (the Job's ``model_inputs``)."""
    return {"pixel_values": batch["pixel_values"]}


# ---------------------------------------------------------------------------------------------------- files
def fashion_mnist_root(root: str | None) -> Path:
    """task.root, else $KDLAB_FASHION_MNIST, else Debian's folder; it must hold the four IDX files."""
    folder = Path(root or os.environ.get(FASHION_MNIST_ENV) or DEBIAN_FASHION_MNIST).expanduser()
    missing = [name for name in _fashion_files() if _find(folder, name) is None]
    if missing:
        raise UserError(
            f"Fashion-MNIST not found in {str(folder)!r} (missing {', '.join(missing)})",
            key="task.root",
            fix="install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set task.root "
            f"(or ${FASHION_MNIST_ENV}) to a folder holding the four *-ubyte(.gz) files",
        )
    return folder


def _fashion_files() -> list[str]:
    return [f"{split}-{kind}" for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _read_pair(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find(root, f"{split}-images-idx3-ubyte")
    labels_path = _find(root, f"{split}-labels-idx1-ubyte")
    assert images_path is not None and labels_path is not None  # fashion_mnist_root checked
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise UserError(
            f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels",
            key="task.root",
            fix="use the matching images and labels files of one data set",
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_LABELS):
        raise UserError(f"{labels_path} has labels above 9", key="task.root", fix="use Fashion-MNIST's label files")
    return images, labels


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip-compressed when its name ends in .gz) with ``ndim`` dimensions."""
    path = Path(path)
    fix = "use the original (optionally gzip-compressed) IDX file, e.g. from `apt-get install dataset-fashion-mnist`"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"cannot read {path}: {err}", key="task.root", fix=fix) from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path} is too short to be an IDX file", key="task.root", fix=fix)
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != _IDX_MAGIC[ndim]:
        raise UserError(
            f"{path} is not an IDX file of {ndim}-dimensional unsigned bytes "
            f"(magic number {magic:#010x}, expected {_IDX_MAGIC[ndim]:#010x})",
            key="task.root",
            fix=fix,
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise UserError(
            f"{path}: its header announces {' x '.join(map(str, dims))} values but it holds {len(raw) - header} "
            "bytes of data (truncated or corrupted)",
            key="task.root",
            fix=fix,
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def digits_split_indices(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and dev positions among ``count`` digits: 80 / 20 by a permutation drawn with seed 0, sorted."""
    order = np.random.RandomState(0).permutation(count)
    cut = count - round(DIGITS_DEV_FRACTION * count)
    return np.sort(order[:cut]), np.sort(order[cut:])


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 1,797 8x8 digits (values 0..16) as [0, 255] bytes like IDX images, split by digits_split_indices."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train, dev = digits_split_indices(len(labels))
    return images[train], labels[train], images[dev], labels[dev]


def _items(images: np.ndarray, labels: np.ndarray, task: ImageTask, limit: int | None) -> list[dict[str, Any]]:
    """Normalised items; one tensor holds all pixels, each item's ``pixel_values`` is a view of it."""
    if limit is not None and limit < len(labels):
        chosen = np.sort(np.random.RandomState(SUBSET_SEED).permutation(len(labels))[:limit])
        images, labels = images[chosen], labels[chosen]
    pixels = torch.from_numpy(images.astype(np.float32)).div_(255.0)  # a copy: IDX arrays are read-only
    pixels = pixels.sub_(task.mean).div_(task.std).unsqueeze(1)
    return [{"pixel_values": pixels[i], "labels": int(label)} for i, label in enumerate(labels.tolist())]
