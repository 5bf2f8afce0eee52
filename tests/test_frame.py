"""butterflyvit frame: images -> the board's raw frame files and back, and the board
classifying such a file exactly as the host does."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from butterflyvit.intmodel import IntModel, rgb_to_rgb565
from butterflyvit.intops import decode_frame
from butterflyvit.modelfile import encode_model

from test_intmodel import tiny_arrays

REPO = Path(__file__).resolve().parents[1]
CLASSIFY = REPO / "device" / "classify.py"


def frame_cli(*args):
    return subprocess.run([sys.executable, "-m", "butterflyvit.cli", "frame", *map(str, args)],
                          capture_output=True, text=True)


def rgb_image(path, w, h, seed=3):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def test_grey_image_at_the_model_size_is_its_own_frame_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "digit.png")
    model = tmp_path / "tiny.bvit"
    model.write_bytes(encode_model(*tiny_arrays("plain")))       # 8x8, 1 channel
    res = frame_cli(tmp_path / "digit.png", "-o", tmp_path / "frames", "--model", model)
    assert res.returncode == 0, res.stderr
    frame = tmp_path / "frames" / "digit_8x8.gray"
    assert frame.read_bytes() == pixels.tobytes()
    res = frame_cli(frame, "-o", tmp_path / "back")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "back" / "digit_8x8.png")), pixels)


def test_colour_model_gets_rgb565_cropped_and_resized(tmp_path):
    pixels = rgb_image(tmp_path / "wide.png", 40, 20)
    model = tmp_path / "rgb.bvit"
    model.write_bytes(encode_model(*tiny_arrays("rgb")))          # 8x8, 3 channels
    res = frame_cli(tmp_path / "wide.png", "-o", tmp_path, "--model", model)
    assert res.returncode == 0, res.stderr
    frame = tmp_path / "wide_8x8.rgb565"
    data = frame.read_bytes()
    assert len(data) == 8 * 8 * 2
    # the centre 20x20 square, resized: what Pillow makes of it, in RGB565
    want = np.asarray(Image.fromarray(pixels[:, 10:30]).resize((8, 8), Image.Resampling.LANCZOS))
    assert data == rgb_to_rgb565(want)
    back = decode_frame(data, 8, 8, "RGB565").astype(int)
    assert np.abs(back - want).max() <= 7                         # 5/6-bit fields
    res = frame_cli(frame, "-o", tmp_path / "png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "png" / "wide_8x8.png")), back)


def test_explicit_format_and_size(tmp_path):
    rgb_image(tmp_path / "cam.png", 64, 48)
    res = frame_cli(tmp_path / "cam.png", "-o", tmp_path, "--format", "rgb565", "--size", "32x24")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cam_32x24.rgb565").stat().st_size == 32 * 24 * 2
    res = frame_cli(tmp_path / "cam.png", "-o", tmp_path)          # default: grey, own size
    assert (tmp_path / "cam_64x48.gray").stat().st_size == 64 * 48


@pytest.mark.parametrize("args, message", [
    (["missing.png"], "missing.png: no such file"),
    (["notes.txt"], "notes.txt: not an image file"),
    (["cam.png", "--size", "9"], "--size '9': expected WIDTHxHEIGHT"),
    (["cam.png", "--size", "0x5"], "--size '0x5': width and height must be 1..4096"),
    (["noname.gray"], "noname.gray: give --size WxH, or name the file NAME_WxH.gray"),
    (["short_4x4.gray"], "short_4x4.gray: GRAYSCALE frame of 4x4 needs 16 bytes (1 per pixel), got 3"),
    (["cam.png", "--model", "tiny.bvit", "--format", "RGB565"],
     "--format RGB565: the model tiny.bvit takes GRAYSCALE frames"),
])
def test_errors_are_one_line_with_status_2(tmp_path, args, message):
    rgb_image(tmp_path / "cam.png", 16, 16)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "noname.gray").write_bytes(bytes(16))
    (tmp_path / "short_4x4.gray").write_bytes(bytes(3))
    (tmp_path / "tiny.bvit").write_bytes(encode_model(*tiny_arrays("plain")))
    res = subprocess.run([sys.executable, "-m", "butterflyvit.cli", "frame", *args, "-o", "out"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_board_classifies_the_frame_file_as_the_host_does(micropython, tmp_path):
    """The frame written for a colour model, read by classify.py on the real MicroPython
    unix port: the same int32 logits as the host reference on the same file."""
    rgb_image(tmp_path / "photo.png", 30, 24, seed=9)
    model = tmp_path / "model.bvit"
    model.write_bytes(encode_model(*tiny_arrays("rgb")))
    assert frame_cli(tmp_path / "photo.png", "-o", tmp_path, "--model", model).returncode == 0
    frame = tmp_path / "photo_8x8.rgb565"
    board = tmp_path / "board"
    board.mkdir()
    shutil.copy(CLASSIFY, board / "classify.py")
    res = micropython.run(board / "classify.py", cwd=tmp_path, extra_path=[REPO / "device"], heapsize="1m",
                          args=["--logits", "--input", frame.name]).check()
    logits = [int(v) for v in res.stdout.split("logits:")[1].split("\n")[0].split()]
    host = IntModel.load(model).forward_frame(frame.read_bytes(), 8, 8, "RGB565")
    assert logits == [int(v) for v in host.logits]
