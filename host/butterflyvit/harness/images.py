"""Which images the harness sends: Fashion-MNIST test images (read with the package's IDX
reader, butterflyvit.data.read_idx), as the camera frames the model takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .transport import HarnessError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise HarnessError(f"{stem}[.gz] not found in {root} (Debian: apt install dataset-fashion-mnist, "
                       "or --data FOLDER)")


def _read(root: Path, stem: str) -> np.ndarray:
    from ..data import read_idx         # here: butterflyvit.data imports torch

    path = _idx_file(root, stem)
    try:
        data = read_idx(path)
    except ValueError as exc:           # not an IDX file, or cut short
        raise HarnessError(str(exc)) from None
    if data.dtype != np.uint8:
        raise HarnessError(f"{path}: not a uint8 IDX file")
    return data


def load_test_images(first: int, count: int, folder=None):
    """Fashion-MNIST test images first..first+count-1 (uint8 28x28) and their labels."""
    root = Path(folder) if folder else FASHION_MNIST_DIR
    x = _read(root, "t10k-images-idx3-ubyte")
    y = _read(root, "t10k-labels-idx1-ubyte")
    if first < 0 or first + count > len(x):
        raise HarnessError(f"images {first}..{first + count - 1} asked for; the test set has {len(x)}")
    return x[first:first + count], y[first:first + count]


def frame_for(image: np.ndarray, channels: int):
    """A 28x28 grey image as the camera frame the model takes: GRAYSCALE for 1 channel,
    big-endian RGB565 (grey in all three) for 3 channels. Returns (bytes, width, height, format)."""
    h, w = image.shape
    if channels == 1:
        return image.tobytes(), w, h, "GRAYSCALE"
    from ..intmodel import rgb_to_rgb565

    return rgb_to_rgb565(np.stack([image] * 3, axis=-1)), w, h, "RGB565"
