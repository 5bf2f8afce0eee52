"""The shipped CIFAR-10 model (models/cifar10-pico.bvit) keeps what models/README.md says:

- it fits the ESP32-S3-EYE (and the Raspberry Pi Pico): file in flash, buffers in the heap;
- on a real MicroPython its int32 logits equal the numpy reference's on colour frames: the
  model's 32x32, a QVGA camera frame (crop and resize), all black and all white;
- classify.py runs it in the ESP32-S3-EYE's heap;
- against its float checkpoint on CIFAR-10 test images, where the data set is on this
  machine (CIFAR10_DATA=path: the pickle directory, its archive, or an image tree).
"""

import os
from pathlib import Path

import numpy as np
import pytest

from butterflyvit import boards as B
from butterflyvit.harness.protocol import job
from butterflyvit.intmodel import IntModel, rgb_to_rgb565

from test_device_model import board_dir, parse_report, run_jobs, write_frame  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "cifar10-pico.bvit"
CHECKPOINT = REPO / "models" / "cifar10-pico.pt"
CIFAR10 = os.environ.get("CIFAR10_DATA")

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="models/cifar10-pico.bvit is not in this checkout")


@pytest.fixture(scope="module")
def model():
    return IntModel.load(MODEL)


def colour_frames():
    """(name, fmt, w, h, bytes): RGB565 frames that exercise the whole input path."""
    rng = np.random.default_rng(10)
    out = [(f"noise{i}", "RGB565", 32, 32, rng.integers(0, 256, 32 * 32 * 2, dtype=np.uint8).tobytes())
           for i in range(3)]
    y, x = np.mgrid[0:32, 0:32] * 8                       # a smooth colour gradient: nearer a
    gradient = np.stack([x, y, (x + y) // 2], axis=-1)     # photo than noise is
    out.append(("gradient", "RGB565", 32, 32, rgb_to_rgb565(gradient.astype(np.uint8))))
    out.append(("black", "RGB565", 32, 32, bytes(32 * 32 * 2)))
    out.append(("white", "RGB565", 32, 32, b"\xff" * (32 * 32 * 2)))
    out.append(("qvga", "RGB565", 320, 240, rng.integers(0, 256, 320 * 240 * 2, dtype=np.uint8).tobytes()))
    return out


def test_fits_the_esp32s3_eye_and_the_pico():
    needs = B.model_needs(str(MODEL))
    for board in ("esp32s3-eye", "rp2040-pico"):
        assert B.fit(B.get_board(board), needs)["fits"], board
    assert needs["config"]["image_size"] == 32 and needs["config"]["in_channels"] == 3


def test_board_logits_equal_the_numpy_reference(micropython, tmp_path, model):
    frames = colour_frames()
    files = [write_frame(tmp_path, name, fmt, w, h, buf) for name, fmt, w, h, buf in frames]
    ref = [[int(v) for v in model.forward_frame(buf, w, h, fmt).logits] for _, fmt, w, h, buf in frames]
    assert len({tuple(r) for r in ref}) == len(ref)       # the frames are told apart
    res = run_jobs(micropython, tmp_path, [job(MODEL, files, backend="viper"),
                                           job(MODEL, files[:2], backend="python", weight_buffer=2048)],
                   heapsize="2m")
    assert res[0]["backend"] == "viper" and res[0]["logits"] == ref
    assert res[1]["logits"] == ref[:2]


def test_classify_in_the_esp32s3_eye_heap(micropython, board_dir, tmp_path, model):  # noqa: F811
    heap_kb = B.get_board("esp32s3-eye").heap // 1024
    _, fmt, w, h, buf = colour_frames()[3]
    (tmp_path / "model.bvit").write_bytes(MODEL.read_bytes())
    (tmp_path / "image.rgb565").write_bytes(buf)
    res = micropython.run(board_dir / "classify.py", heapsize=f"{heap_kb}k", cwd=tmp_path,
                          args=["--logits", "--input", "image.rgb565", "--size", "32x32"],
                          extra_path=[board_dir])
    assert res.returncode == 0, res.stdout + res.stderr
    rep = parse_report(res.stdout)
    ref = model.forward_frame(buf, w, h, fmt)
    assert rep["logits"] == [int(v) for v in ref.logits]
    assert [t[0] for t in rep["top"]] == [model.classes[i] for i, _ in ref.top(3)]
    assert rep["peak_kb"] < heap_kb


@pytest.mark.skipif(not CIFAR10, reason="set CIFAR10_DATA to a CIFAR-10 copy to compare with the float model")
def test_integer_model_agrees_with_its_checkpoint(model):
    torch = pytest.importorskip("torch")
    from butterflyvit.checkpoint import load_model
    from butterflyvit.data import load_cifar10, normalize

    ds = load_cifar10(CIFAR10)
    fm, ck = load_model(CHECKPOINT)
    images = ds.test.images[::50]           # 200 images, every class (an image tree is in class order)
    with torch.no_grad():
        fl = fm(normalize(images, ck["normalize"]["mean"], ck["normalize"]["std"])).argmax(-1).numpy()
    il = np.array([model.forward_pixels(im.numpy()).top(1)[0][0] for im in images])
    assert np.mean(il == fl) >= 0.95        # 97.7 % on all 10,000 (models/README.md)
    assert np.mean(il == ds.test.labels[::50].numpy()) >= 0.65
