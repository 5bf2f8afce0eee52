"""Checkpoints: one torch.save'd dict (format in docs/training.md).

Keys: "format" (1), "config" (ModelConfig.to_dict()), "model" (state_dict), "normalize"
({"mean": [...], "std": [...]} per channel, for p/255), "classes", "dataset", "train"
(the TrainConfig as a dict), "optimizer", "scheduler", "step", "epoch", "total_steps",
"metrics", "torch_version".
"""

import os
from pathlib import Path

import torch

from .config import ModelConfig

FORMAT = 1


def build_model(cfg: ModelConfig):
    from .vit import ViT
    return ViT(cfg)


def save_checkpoint(path, ckpt: dict) -> None:
    """Atomic save: write a temporary file beside `path`, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"format": FORMAT, "torch_version": torch.__version__, **ckpt}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a butterflyvit checkpoint")
    if ckpt.get("format", FORMAT) > FORMAT:
        raise ValueError(f"{path}: checkpoint format {ckpt['format']} is newer than {FORMAT}")
    return ckpt


def load_model(path, map_location="cpu"):
    """(model in eval mode, checkpoint dict) from a checkpoint file."""
    ckpt = load_checkpoint(path, map_location)
    model = build_model(ModelConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt
