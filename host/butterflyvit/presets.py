"""Named model configurations (`butterflyvit train --preset NAME`, `butterflyvit memory`).

- pico: the shipped microcontroller model (Fashion-MNIST 28x28x1, 49 patches of 4x4,
  dim 64, 4 blocks, 64 experts). Trains on a laptop CPU; a few hundred KB packed.
- paper: the paper's model as reconstructed from its memory figure (arXiv 2603.06746):
  32x32x3, patch 4, dim 256, ffn 1024, depth 7, 64 experts, n_l 4, 4 heads, CIFAR-100.
- cifar: a CIFAR-10 model sized for the ESP32-S3-EYE (32x32x3, 64 patches of 4x4, dim 128,
  6 blocks, ffn 512, 64 experts): about 1.6 MB packed, 108 KB peak RAM on the row-by-row
  path (heap 150 KB); `butterflyvit boards --preset cifar` shows where it fits. Training it
  well takes a GPU-scale budget (docs/training.md).
- tiny: for tests and smoke runs (sklearn digits, 8x8).
Training sets image_size, in_channels and num_classes from the data set it is given.
"""

from .config import ModelConfig

PRESETS = {
    "pico": dict(image_size=28, in_channels=1, patch_size=4, num_classes=10, dim=64, depth=4,
                 heads=4, ffn_dim=256, ffn="butterfly", num_experts=64, top_k=2,
                 butterfly_stages=4),
    "paper": dict(image_size=32, in_channels=3, patch_size=4, num_classes=100, dim=256, depth=7,
                  heads=4, ffn_dim=1024, ffn="butterfly", num_experts=64, top_k=2,
                  butterfly_stages=4),
    "cifar": dict(image_size=32, in_channels=3, patch_size=4, num_classes=10, dim=128, depth=6,
                  heads=4, ffn_dim=512, ffn="butterfly", num_experts=64, top_k=2,
                  butterfly_stages=4),
    "tiny": dict(image_size=8, in_channels=1, patch_size=4, num_classes=10, dim=16, depth=2,
                 heads=2, ffn_dim=32, ffn="butterfly", num_experts=4, top_k=2,
                 butterfly_stages=3),
}


def preset_config(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    d = dict(PRESETS[name])
    d.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(**d)
