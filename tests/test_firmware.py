"""scripts/build_firmware.py: MicroPython firmware with the native module, the frozen device
code and a frozen model.

The argument and prerequisite checks always run (they need no MicroPython source: a folder
laid out like a checkout is enough for the checks before a build). Building needs a real
checkout, which no package registry has: those tests are skipped unless MICROPYTHON_DIR names
one (docs/firmware.md: the pinned tag, and how the checkout here was made). They build the
unix port (and the qemu port, an emulated Cortex-M3, when arm-none-eabi-gcc and
qemu-system-arm are installed) into a temporary folder and check the frozen classifier's
logits against the host's integer model, bit for bit, on the native kernels.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from beds.firmware import ICOUNT, QemuRepl, switches_for_missing_submodules

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build_firmware.py"
MODEL = REPO / "models" / "pico-fmnist.bvit"
MPY_DIR = os.environ.get("MICROPYTHON_DIR")
NEEDS_CHECKOUT = pytest.mark.skipif(
    not MPY_DIR, reason="set MICROPYTHON_DIR to a MicroPython checkout (v1.28.0, docs/firmware.md) "
    "to build firmware")


def build(*args, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("MICROPYTHON_DIR", None)
    e.update(env or {})
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=e, timeout=timeout, cwd=REPO)


def error_line(res):
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert lines and lines[0].startswith("build_firmware: error: "), res.stderr
    return res.stderr


# ----------------------------------------------------------------- no checkout needed

@pytest.fixture
def fake_checkout(tmp_path):
    """Folders where a checkout has them, every submodule empty (as after a plain clone)."""
    top = tmp_path / "micropython"
    for d in ("py", "mpy-cross", "ports/unix", "ports/qemu", "ports/rp2", "ports/esp32",
              "lib/micropython-lib", "lib/berkeley-db-1.xx", "lib/mbedtls", "lib/pico-sdk",
              "lib/tinyusb"):
        (top / d).mkdir(parents=True)
    (top / "py" / "mkrules.mk").write_text("")
    (top / "py" / "mpconfig.h").write_text("#define MICROPY_VERSION_MAJOR 1\n#define "
                                           "MICROPY_VERSION_MINOR 28\n#define MICROPY_VERSION_MICRO 0\n")
    return top


def fill(top, *subs):
    for s in subs:
        (top / s / "README.md").write_text("stand-in\n")


def test_missing_checkout_is_one_clear_line(tmp_path):
    err = error_line(build("--port", "unix"))
    assert "no MicroPython checkout: pass --micropython DIR or set MICROPYTHON_DIR" in err
    err = error_line(build("--micropython", tmp_path / "nowhere", "--port", "qemu"))
    assert f"--micropython {tmp_path / 'nowhere'}: not a MicroPython checkout" in err


def test_unknown_board_and_port_mismatch(fake_checkout):
    err = error_line(build("--micropython", fake_checkout, "--board", "nope"))
    assert "--board: unknown board 'nope'; known: unix, qemu, qemu-m0plus, rp2040-pico, esp32-cam" in err
    err = error_line(build("--micropython", fake_checkout, "--port", "rp2", "--board", "esp32c3"))
    assert "--board esp32c3 is built with --port esp32, not rp2" in err
    res = build("--micropython", fake_checkout, "--port", "stm32")
    assert res.returncode == 2 and "invalid choice: 'stm32'" in res.stderr


def test_missing_submodules_and_toolchains_are_named(fake_checkout, tmp_path):
    top = fake_checkout
    err = error_line(build("--micropython", top, "--port", "unix"))
    assert f"{top}/lib/micropython-lib is empty: the unix port needs that submodule; run " \
           f"`make -C {top}/ports/unix submodules`" in err
    fill(top, "lib/micropython-lib")
    err = error_line(build("--micropython", top, "--port", "unix"))
    assert "lib/berkeley-db-1.xx is empty" in err and "(or build without it: -- MICROPY_PY_BTREE=0)" in err
    (top / "lib/mbedtls/.git").write_text("gitdir: ../../.git/modules/lib/mbedtls\n")
    err = error_line(build("--micropython", top, "--port", "unix", "--", "MICROPY_PY_BTREE=0"))
    assert "lib/mbedtls is empty" in err  # a .git alone is no submodule's content
    err = error_line(build("--micropython", top, "--board", "rp2040-pico"))
    assert f"lib/pico-sdk is empty: the rp2 port needs that submodule; run " \
           f"`make -C {top}/ports/rp2 BOARD=RPI_PICO submodules`" in err
    fill(top, "lib/pico-sdk", "lib/berkeley-db-1.xx")
    err = error_line(build("--micropython", top, "--board", "rp2040-pico"))
    assert "lib/tinyusb is empty: the rp2 port needs that submodule" in err
    fill(top, "lib/tinyusb")
    err = error_line(build("--micropython", top, "--board", "rp2040-pico"))
    assert "lib/mbedtls is empty: the rp2 port needs that submodule" in err
    err = error_line(build("--micropython", top, "--board", "esp32s3-eye", env={"IDF_PATH": ""}))
    assert "ESP-IDF not found: the esp32 port needs IDF_PATH" in err
    err = error_line(build("--micropython", top, "--board", "esp32c3",
                           env={"IDF_PATH": str(tmp_path / "no-idf")}))
    assert "ESP-IDF not found" in err
    if not shutil.which("idf.py"):  # an ESP-IDF folder, but its export.sh not run
        (tmp_path / "idf" / "tools").mkdir(parents=True)
        (tmp_path / "idf" / "tools" / "idf.py").write_text("")
        err = error_line(build("--micropython", top, "--board", "esp32c3",
                               env={"IDF_PATH": str(tmp_path / "idf")}))
        assert f"idf.py not on PATH: run `. {tmp_path / 'idf'}/export.sh` first" in err


def test_dry_run_shows_the_port_command(fake_checkout, tmp_path):
    """The make command per board, and the user-module layout each kind of port needs."""
    top = fake_checkout
    fill(top, "lib/micropython-lib")
    out = tmp_path / "out"
    res = build("--micropython", top, "--port", "unix", "--out", out, "--dry-run", "--",
                "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=0")
    assert res.returncode == 0, res.stderr
    assert f"make -C {top}/ports/unix" in res.stdout and "VARIANT=standard" in res.stdout
    assert f"USER_C_MODULES={out}/usermods " in res.stdout and "MICROPY_PY_BTREE=0" in res.stdout
    assert f"FROZEN_MANIFEST={REPO}/boards/unix/manifest.py" in res.stdout
    # make-based ports include USER_C_MODULES/*/micropython.mk: one link per module
    assert (out / "usermods" / "bvitnative").resolve() == REPO / "native"
    assert (out / "usermods" / "bvitnative" / "micropython.mk").is_file()
    # cmake ports: a .cmake file including native/micropython.cmake
    shutil.which("cmake") or pytest.skip("cmake not installed")
    fill(top, "lib/pico-sdk", "lib/tinyusb", "lib/mbedtls")
    res = build("--micropython", top, "--board", "rp2040-pico", "--out", out, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"USER_C_MODULES={out}/usermods.cmake" in res.stdout and "BOARD=RPI_PICO" in res.stdout
    assert f"include({REPO}/native/micropython.cmake)" in (out / "usermods.cmake").read_text()
    # --model: frozen as bvitmodel.py (not bvit_model: the C name of bvit/model.py)
    res = build("--micropython", top, "--port", "qemu", "--out", out, "--dry-run", "--model", MODEL)
    assert res.returncode == 0, res.stderr
    assert f"BVIT_MODEL_PY={out}/bvitmodel.py make -C {top}/ports/qemu" in res.stdout
    assert "BOARD=MPS2_AN385" in res.stdout and f"{REPO}/boards/qemu/manifest.py" in res.stdout
    ns = {}
    exec((out / "bvitmodel.py").read_text(), ns)
    assert ns["MODEL"] == MODEL.read_bytes()
    res = build("--micropython", top, "--board", "unix", "--variant", "minimal", "--out", out,
                "--dry-run", "--model", out / "missing.bvit")
    assert res.returncode == 2 and "--model " in res.stderr and "missing.bvit: no such file" in res.stderr


# ----------------------------------------------------------------- with a checkout

def frames(n=3, seed=11):
    rng = np.random.default_rng(seed)
    out = [bytes(range(256)) * 3 + bytes(16)]
    out += [rng.integers(0, 256, 28 * 28, dtype=np.uint8).tobytes() for _ in range(n - 1)]
    return out


def host_logits(frame):
    from butterflyvit.intmodel import IntModel

    m = IntModel.load(MODEL)
    return [int(v) for v in m.forward_frame(frame, 28, 28, "GRAYSCALE").logits]


@NEEDS_CHECKOUT
def test_unix_firmware_classifies_bit_exact(tmp_path):
    top = Path(MPY_DIR)
    out = tmp_path / "unix"
    res = build("--micropython", top, "--port", "unix", "--model", MODEL, "--out", out, "--",
                *switches_for_missing_submodules(top), timeout=1800)
    assert res.returncode == 0, res.stdout + res.stderr
    exe = out / "micropython"
    assert "built in" in res.stdout and str(exe) in res.stdout and exe.is_file()
    env = dict(os.environ, MICROPYPATH=".frozen")  # only what is frozen: no device/ on the path
    for i, frame in enumerate(frames()):
        img = tmp_path / f"img{i}_28x28.gray"
        img.write_bytes(frame)
        run = subprocess.run([str(exe), "-X", "heapsize=256k", "-m", "classify", "--model",
                              "module:bvitmodel", "--input", img, "--logits"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        # the model frozen: read in place, so the native whole-layer path runs
        assert run.returncode == 0 and "kernels: native (whole layers)" in run.stdout, \
            run.stdout + run.stderr
        got = re.search(r"^logits: (.*)$", run.stdout, re.M)
        assert got, run.stdout
        assert [int(v) for v in got.group(1).split()] == host_logits(frame)


@NEEDS_CHECKOUT
@pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
def test_qemu_firmware_classifies_bit_exact(tmp_path):
    out = tmp_path / "qemu"
    res = build("--micropython", MPY_DIR, "--port", "qemu", "--model", MODEL, "--out", out,
                timeout=1800)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "firmware.elf").is_file()
    imgs = frames(2)
    code = "\n".join([
        "import bvitmodel, bvitnative",
        "from bvit.model import Classifier",
        "from bvit.frames import Frame",
        "net = Classifier(bvitmodel.MODEL)",
        "print(net.k.NAME, net.layers)",
        f"for f in {imgs!r}:",
        "    print(list(net.classify_frame(Frame(f, 28, 28, 'GRAYSCALE'))))",
    ])
    board = QemuRepl(out / "firmware.elf", *ICOUNT)
    try:
        lines = board.exec(code).splitlines()
    finally:
        board.close()
    assert lines[0] == "native True", lines      # the whole-layer path on the frozen model
    got = [[int(v) for v in line.strip("[]").split(",")] for line in lines[1:]]
    assert got == [host_logits(f) for f in imgs]
