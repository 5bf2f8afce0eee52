"""Boards without a writable file system: classify.py finds a model frozen into the
firmware (module bvitmodel) when no model.bvit is there, and a board with no file system
at all (ENODEV) gets the same advice as a missing file. On the real MicroPython unix port;
the frozen module is stood in for by a bvitmodel.py on the path (the same import)."""

import shutil
from pathlib import Path

import numpy as np

from test_intmodel import tiny_bytes, tiny_model

REPO = Path(__file__).resolve().parents[1]


def board(tmp_path):
    d = tmp_path / "board"
    d.mkdir()
    shutil.copy(REPO / "device" / "classify.py", d / "classify.py")
    return d


def test_frozen_model_is_found_without_options(micropython, tmp_path):
    d = board(tmp_path)
    (d / "bvitmodel.py").write_text(f"MODEL = {tiny_bytes()!r}\n")
    pixels = np.random.default_rng(5).integers(0, 256, 64, dtype=np.uint8).tobytes()
    (d / "image.gray").write_bytes(pixels)          # 8x8: the tiny model's size
    res = micropython.run(d / "classify.py", args=["--logits"], cwd=d, heapsize="1m",
                          extra_path=[REPO / "device", d]).check()
    assert res.stdout.startswith("model module:bvitmodel (")
    logits = [int(v) for v in res.stdout.split("logits: ")[1].split("\n")[0].split()]
    assert logits == [int(v) for v in tiny_model().forward_frame(pixels, 8, 8, "GRAYSCALE").logits]


def test_a_file_beats_the_frozen_model(micropython, tmp_path):
    d = board(tmp_path)
    (d / "bvitmodel.py").write_text("MODEL = b'not read'\n")
    (d / "model.bvit").write_bytes(tiny_bytes())
    (d / "image.gray").write_bytes(bytes(64))
    res = micropython.run(d / "classify.py", cwd=d, heapsize="1m",
                          extra_path=[REPO / "device", d]).check()
    assert res.stdout.startswith("model model.bvit (")


def test_no_model_anywhere_and_no_file_system_say_what_to_do(micropython, tmp_path):
    d = board(tmp_path)
    (d / "image.gray").write_bytes(bytes(64))
    res = micropython.run(d / "classify.py", cwd=d, heapsize="1m", extra_path=[REPO / "device"])
    assert res.returncode == 1
    want = ("no model file 'model.bvit' on the board (copy one: mpremote cp pico-fmnist.bvit "
            ":model.bvit; or freeze one into the firmware: scripts/build_firmware.py --model)")
    assert want in res.stdout
    # what a board with no file system mounted raises when a file is opened
    code = ("from bvit.errors import oserror\n"
            "print(oserror(OSError(19), {'model': 'model.bvit', 'input': 'x'}, 'loading the model'))\n")
    res = micropython.run(code=code, heapsize="1m", extra_path=[REPO / "device"]).check()
    assert res.stdout.strip() == want
