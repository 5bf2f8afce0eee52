"""--dataset folder: your own images, DIR/<class>/<image>, any format and size; the hash
split, the cache keyed on every file, clear errors naming the file, and train -> pack ->
eval taking the data set from the checkpoint."""

import json
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from butterflyvit.data import DataError, _test_side, load_dataset, load_folder
from butterflyvit.images import ImageError

pytest.importorskip("torch")


def shape_image(cls: str, i: int, size, mode="RGB"):
    """A picture of its class: a bright square in a class-specific corner, with noise."""
    rng = np.random.default_rng(zlib.crc32(f"{cls}{i}".encode()))
    w, h = size
    px = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    x0 = {"left": 0, "right": w // 2, "top": w // 4}[cls]
    y0 = {"left": 0, "right": 0, "top": h // 2}[cls]
    px[y0:y0 + h // 2, x0:x0 + w // 2] = (200, 180, 160)
    return Image.fromarray(px).convert(mode)


def make_folder(root, per_class=15, mode="RGB"):
    """Three classes, mixed formats (PNG, JPEG, BMP) and sizes (some not square)."""
    sizes = [(16, 16), (24, 18), (12, 20), (40, 40)]
    for cls in ("left", "right", "top"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = (".png", ".jpg", ".bmp")[i % 3]
            shape_image(cls, i, sizes[i % len(sizes)], mode).save(root / cls / f"img{i:03d}{ext}")
    return root


def test_flat_folder_any_sizes_hash_split_and_class_names(tmp_path):
    root = make_folder(tmp_path / "photos")
    ds = load_folder(root, image_size=8, cache_dir=tmp_path / "cache")
    assert ds.name == "folder" and ds.classes == ["left", "right", "top"]
    assert ds.channels == 3 and ds.image_size == 8
    assert len(ds.train) + len(ds.test) == 45
    want_test = sum(_test_side(c, f"img{i:03d}{e}") for c in ds.classes
                    for i, e in ((i, (".png", ".jpg", ".bmp")[i % 3]) for i in range(15)))
    assert len(ds.test) == want_test and 0 < want_test < 45
    assert ds.train.images.dtype.is_floating_point is False and set(ds.train.labels.tolist()) == {0, 1, 2}


def test_greyscale_images_give_a_one_channel_data_set(tmp_path):
    root = make_folder(tmp_path / "grey", per_class=6, mode="L")
    ds = load_folder(root, image_size=12, cache_dir=tmp_path / "cache")
    assert ds.channels == 1 and tuple(ds.train.images.shape[1:]) == (1, 12, 12)


def test_train_test_folders_are_the_split(tmp_path):
    root = tmp_path / "split"
    make_folder(root / "train", per_class=4)
    make_folder(root / "test", per_class=2)
    ds = load_folder(root, image_size=8, cache_dir=tmp_path / "cache")
    assert (len(ds.train), len(ds.test)) == (12, 6)


def test_cache_sees_images_added_to_a_class_folder(tmp_path):
    root = make_folder(tmp_path / "photos", per_class=10)
    before = load_folder(root, image_size=8, cache_dir=tmp_path / "cache")
    for i in range(10, 15):                       # the root folder's own mtime does not change
        shape_image("top", i, (16, 16)).save(root / "top" / f"img{i:03d}.png")
    after = load_folder(root, image_size=8, cache_dir=tmp_path / "cache")
    assert len(after.train) + len(after.test) == len(before.train) + len(before.test) + 5
    # a file keeps its side of the split when others are added
    assert len(after.test) >= len(before.test) and len(after.train) >= len(before.train)
    assert len(list((tmp_path / "cache").glob("folder-*.npz"))) == 2


def test_errors_name_the_file_or_option(tmp_path):
    root = make_folder(tmp_path / "photos", per_class=4)
    (root / "left" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageError, match=r"broken\.jpg: not an image file"):
        load_folder(root, image_size=8, cache_dir=tmp_path / "c1")
    one = tmp_path / "one"
    make_folder(one, per_class=4)
    for cls in ("right", "top"):
        for p in (one / cls).iterdir():
            p.unlink()
    with pytest.raises(DataError, match="found 1 class folder"):
        load_folder(one, cache_dir=tmp_path / "c2")
    with pytest.raises(DataError, match="--dataset folder needs --data DIR"):
        load_dataset("folder")
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_dataset("folder", str(tmp_path / "nowhere"))


def test_train_pack_eval_on_your_own_images(tmp_path):
    """The hobbyist's path through the CLI: eval finds the data set and folder from the
    checkpoint, and from the model file alone."""
    root = make_folder(tmp_path / "photos", per_class=12)
    env_cache = ["--cache-dir", str(tmp_path / "cache")]

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "butterflyvit.cli", *args], capture_output=True,
                           text=True, cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr
        return r.stdout

    cli("train", "--dataset", "folder", "--data", str(root), "--image-size", "8", "--preset", "tiny",
        "--steps", "20", "--batch-size", "8", "--no-progress", "--out", "own.pt", *env_cache)
    cli("pack", "own.pt", "-o", "own.bvit", "--calib", "16", *env_cache)
    for extra in (["--checkpoint", "own.pt"], []):
        res = json.loads(cli("eval", "own.bvit", "--json", "--no-progress", *extra, *env_cache))
        assert res["dataset"] == "folder" and res["images"] > 0
    from butterflyvit.intmodel import IntModel
    assert IntModel.load(tmp_path / "own.bvit").classes == ["left", "right", "top"]
