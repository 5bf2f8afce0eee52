"""Which images the harness sends, and what their labels are.

By default the test split of the model's own data set: the one its file says it was
calibrated on (metadata "calibration", else "source"), loaded with butterflyvit.data at the
model's input size; `--dataset`/`--data` choose another. Or `--images-from DIR`: your own
image files, DIR/<class>/<image> (labelled: the class folder names the model's class) and/or
DIR/<image> (unlabelled: compared with the host, no top-1). Every image goes to the board as
the camera frame the model takes (GRAYSCALE for 1 channel, big-endian RGB565 for 3), at the
model's input size (your own files are centre-cropped and resized on the host first, as
`butterflyvit frame --model` does), so a frame costs the serial line no more than it must.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .transport import HarnessError

# Files packed before the model file recorded its data set: the harness's old default.
LEGACY_DATASET = "fashion-mnist"


@dataclass
class TestImages:
    """The images a run can send: pixels at the model's size, (H, W) grey or (H, W, 3) RGB,
    their labels (the model's class index, or None for an unlabelled image) and where they
    came from (the report's "images" section)."""
    pixels: list
    labels: list
    source: dict
    names: list = field(default_factory=list)     # file names (--images-from), else empty

    def __len__(self):
        return len(self.pixels)


def model_dataset(meta: dict, cfg) -> tuple:
    """(data set name, --data path or None, how it was chosen) recorded in a model file."""
    calib = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else {}
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    if calib.get("dataset"):
        return calib["dataset"], calib.get("data"), "the model file's calibration data set"
    if source.get("dataset"):
        return source["dataset"], None, "the model file's training data set"
    if (cfg.in_channels, cfg.image_size) == (1, 28):
        return LEGACY_DATASET, None, "default (the model file records no data set)"
    return None, None, None


def load_dataset_images(model_path, meta: dict, cfg, dataset=None, data=None, cache_dir=None) -> TestImages:
    """The test split of the model's data set (or of --dataset/--data), labels mapped to the
    model's classes."""
    from ..data import DataError, load_dataset

    recorded, recorded_data, how = model_dataset(meta, cfg)
    name = dataset or recorded
    if name is None:
        raise HarnessError(f"{model_path} records no data set it was calibrated on: give "
                           "--dataset NAME (and --data PATH) or --images-from DIR")
    if dataset:
        how = "--dataset"
    if data is None and name == recorded:
        data = recorded_data           # where the data was when the model was packed
    try:
        ds = load_dataset(name, data, cache_dir, cfg.image_size)
    except (DataError, ImportError) as exc:
        raise HarnessError(f"cannot load the model's test images, data set {name!r} ({how}): {exc}; "
                           "give --data PATH or --images-from DIR") from None
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if (ds.channels, ds.image_size, ds.image_size) != shape:
        raise HarnessError(f"data set {name!r} has {ds.channels}x{ds.image_size}x{ds.image_size} "
                           f"images, {model_path} takes {'x'.join(map(str, shape))}: give "
                           "--dataset/--data or --images-from DIR")
    to_model, matched = _class_map(ds.classes, meta.get("classes"), cfg.num_classes, name)
    x = ds.test.images.numpy()
    pixels = [im[0] if cfg.in_channels == 1 else im.transpose(1, 2, 0) for im in x]
    labels = [to_model[int(y)] for y in ds.test.labels.numpy()]
    source = {"source": "dataset", "dataset": name, "split": "test", "data": str(data) if data else None,
              "chosen_by": how, "classes": list(ds.classes), "classes_matched": matched,
              "available": len(pixels)}
    return TestImages(pixels, labels, source)


def _class_map(ds_classes, model_classes, num_classes, name) -> tuple:
    """Data set class index -> model class index: by name when every data set class is one
    of the model's, else by position when the counts agree."""
    model_classes = list(model_classes or [])
    if model_classes and set(ds_classes) <= set(model_classes):
        return [model_classes.index(c) for c in ds_classes], "by name"
    if len(ds_classes) == num_classes:
        return list(range(num_classes)), "by position"
    raise HarnessError(f"data set {name!r} has {len(ds_classes)} classes ({', '.join(ds_classes[:5])}"
                       f"{', ...' if len(ds_classes) > 5 else ''}), the model {num_classes} "
                       f"({', '.join(model_classes[:5])}): give --dataset/--data or --images-from DIR")


def load_folder_images(folder, meta: dict, cfg) -> TestImages:
    """--images-from DIR: DIR/<class>/<image> (labelled by the class folder's name, which must
    be one of the model's classes) and DIR/<image> (unlabelled), in name order, read as the
    model's channels and fitted to its input size."""
    from ..data import IMAGE_EXT
    from ..images import ImageError, fit, read_image

    root = Path(folder)
    if not root.is_dir():
        raise HarnessError(f"--images-from {folder}: no such folder")

    def images_in(d: Path):
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT
                      and not p.name.startswith("."))

    classes = list(meta.get("classes") or [])
    files = [(None, p) for p in images_in(root)]
    for d in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        inside = images_in(d)
        if inside and d.name not in classes:
            raise HarnessError(f"--images-from {d}: '{d.name}' is not one of the model's classes "
                               f"({', '.join(classes)}); name class folders after them, or put "
                               "unlabelled images directly in the folder")
        files += [(classes.index(d.name), p) for p in inside]
    if not files:
        raise HarnessError(f"--images-from {folder}: no images ({', '.join(IMAGE_EXT)}) in it "
                           "or in its class folders")
    mode, size = ("L" if cfg.in_channels == 1 else "RGB"), (cfg.image_size, cfg.image_size)
    pixels = []
    for _, p in files:
        try:
            pixels.append(fit(read_image(p, mode), size))
        except (ImageError, OSError) as exc:
            raise HarnessError(f"--images-from: {exc}") from None
    labels = [c for c, _ in files]
    names = [str(p.relative_to(root)) for _, p in files]
    source = {"source": "images-from", "folder": str(root), "labelled": sum(c is not None for c in labels),
              "available": len(pixels)}
    return TestImages(pixels, labels, source, names)


def frame_for(image: np.ndarray):
    """Pixels at the model's size as the camera frame the model takes: GRAYSCALE for (H, W),
    big-endian RGB565 for (H, W, 3). Returns (bytes, width, height, format)."""
    h, w = image.shape[:2]
    if image.ndim == 2:
        return np.ascontiguousarray(image).tobytes(), w, h, "GRAYSCALE"
    from ..intmodel import rgb_to_rgb565

    return rgb_to_rgb565(image), w, h, "RGB565"
