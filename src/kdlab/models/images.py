"""Image classifiers of a given width, for teacher -> student capacity-gap experiments.

``ImageConvNet``: blocks of conv3x3 (no bias) - BatchNorm - ReLU - max-pool 2x2, with widths w, 2w (, 4w, ...),
then global average pooling and a linear layer to the classes. ``ImageMLP``: flatten - linear to w - ReLU - linear
to the classes. Both are called as ``model(pixel_values=[B, C, H, W])`` and return an object with ``.logits``
``[B, num_labels]``, so the Trainer, the objectives and the teacher sources treat them like any other model.

A saved model is a folder with ``config.json`` (``model_type`` ``kdlab-image-cnn`` / ``kdlab-image-mlp``) and
``model.safetensors``, written atomically.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from kdlab.errors import UserError
from kdlab.io import atomic_dir

ImageKind = Literal["cnn", "mlp"]
MODEL_TYPE_PREFIX = "kdlab-image-"


@dataclass
class ImageModelConfig:
    kind: ImageKind
    width: int
    num_labels: int
    image_shape: tuple[int, int, int]  # channels, height, width
    blocks: int = 2  # cnn: conv blocks of widths w, 2w, 4w, ...
    label_names: list[str] = field(default_factory=list)

    @property
    def model_type(self) -> str:
        return MODEL_TYPE_PREFIX + self.kind

    def to_json(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageModelConfig:
        data = {k: v for k, v in data.items() if k != "model_type"}
        data["image_shape"] = tuple(data["image_shape"])
        return cls(**data)


@dataclass
class ImageOutput:
    logits: Tensor


class ImageConvNet(nn.Module):
    def __init__(self, config: ImageModelConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.width * 2**i for i in range(config.blocks)]
        channels = [config.image_shape[0], *widths]
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),  # BatchNorm supplies the bias
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
                for c_in, c_out in itertools.pairwise(channels)
            )
        )
        # The classifier reads the whole last feature map: global average pooling would leave a tiny student
        # a handful of features (32 for width 16) and cost it most of its accuracy.
        side_h, side_w = (n // 2**config.blocks for n in config.image_shape[1:])
        self.classifier = nn.Linear(widths[-1] * side_h * side_w, config.num_labels)

    def forward(self, pixel_values: Tensor) -> ImageOutput:
        return ImageOutput(self.classifier(self.blocks(pixel_values).flatten(1)))


class ImageMLP(nn.Module):
    def __init__(self, config: ImageModelConfig) -> None:
        super().__init__()
        self.config = config
        c, h, w = config.image_shape
        self.hidden = nn.Linear(c * h * w, config.width)
        self.classifier = nn.Linear(config.width, config.num_labels)

    def forward(self, pixel_values: Tensor) -> ImageOutput:
        return ImageOutput(self.classifier(torch.relu(self.hidden(pixel_values.flatten(1)))))


def build_image_model(config: ImageModelConfig) -> nn.Module:
    if config.kind == "cnn":
        _check_pooling(config)
        return ImageConvNet(config)
    return ImageMLP(config)


def _check_pooling(config: ImageModelConfig) -> None:
    """Each block halves the image; a block that would receive a 1-pixel image has nothing to pool."""
    side = min(config.image_shape[1:])
    if side < 2**config.blocks:
        raise ValueError(f"a {config.blocks}-block CNN needs images of at least {2**config.blocks} pixels a side")


def image_parameter_count(config: ImageModelConfig) -> int:
    """Parameters of the model ``config`` describes (for tables), without training it."""
    return sum(p.numel() for p in build_image_model(config).parameters())


def save_image_model(model: nn.Module, path: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` to a temporary sibling folder, then rename it onto ``path``."""
    config: ImageModelConfig = model.config  # type: ignore[assignment]
    path = Path(path)
    with atomic_dir(path) as tmp:
        tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def is_image_model(path: str | Path) -> bool:
    """Whether ``path`` holds a saved kdlab image model (read from its config.json, nothing loaded)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and str(data.get("model_type", "")).startswith(MODEL_TYPE_PREFIX)


def load_image_model(path: str | Path, key: str = "teacher.model") -> nn.Module:
    """A model saved by :func:`save_image_model`, in eval mode on the CPU."""
    path = Path(path)
    if not is_image_model(path):
        raise UserError(
            f"{str(path)!r} is not a saved kdlab image model",
            key=key,
            fix="give the model folder of an image finetune or distill run (it holds config.json and "
            "model.safetensors)",
        )
    config = ImageModelConfig.from_json(json.loads((path / "config.json").read_text(encoding="utf-8")))
    model = build_image_model(config)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval()


@torch.inference_mode()
def image_logits(model: nn.Module, items: list[dict[str, Any]], batch_size: int, device: torch.device) -> Tensor:
    """The model's logits ``[N, C]`` for every item, in item order (eval mode, no grad), on the CPU."""
    was_training = model.training
    model.eval()
    rows = []
    for start in range(0, len(items), batch_size):
        pixels = torch.stack([item["pixel_values"] for item in items[start : start + batch_size]])
        rows.append(model(pixel_values=pixels.to(device)).logits.float().cpu())
    model.train(was_training)
    return torch.cat(rows) if rows else torch.zeros(0, 0)


def image_accuracy(model: nn.Module, items: list[dict[str, Any]], batch_size: int, device: torch.device) -> float:
    if not items:
        return 0.0
    predictions = image_logits(model, items, batch_size, device).argmax(-1)
    labels = torch.as_tensor([item["labels"] for item in items])
    return float((predictions == labels).float().mean())
