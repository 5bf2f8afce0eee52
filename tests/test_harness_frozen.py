"""`butterflyvit harness` on real frozen firmware: MicroPython's qemu port on an emulated
Cortex-M3 board (mps2-an385), built by scripts/build_firmware.py with the native module, the
device code and the shipped model frozen in, and no file system at all (ENODEV). The harness
talks to its UART on a pty, as to a board on a USB serial port.

It must see that the code is frozen and the board's model is --model, copy nothing, run
bit-exact, and report the live heap (collected), not the heap full of garbage a board that
never collects shows. Another model: one clear error, exit 1.

Needs a MicroPython checkout (MICROPYTHON_DIR, docs/firmware.md), arm-none-eabi-gcc and
qemu-system-arm; skipped with a message otherwise. The firmware is built once per module
(about 1 minute). The same decisions on the unix MicroPython, without a checkout:
tests/test_harness_nofs.py.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from butterflyvit.cli import main
from test_boards import make_model

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "pico-fmnist.bvit"
MPY_DIR = os.environ.get("MICROPYTHON_DIR")

pytestmark = [
    pytest.mark.skipif(not MPY_DIR, reason="set MICROPYTHON_DIR to a MicroPython checkout (v1.28.0, "
                       "docs/firmware.md) to build the frozen firmware"),
    pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                       reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)"),
]


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    out = tmp_path_factory.mktemp("qemu-frozen")
    env = {k: v for k, v in os.environ.items() if k != "MICROPYTHON_DIR"}
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "build_firmware.py"), "--micropython",
                          MPY_DIR, "--port", "qemu", "--model", str(MODEL), "--out", str(out)],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    assert res.returncode == 0, res.stdout + res.stderr
    return out / "firmware.elf"


@pytest.fixture(scope="module")
def qemu_port(firmware):
    """The firmware running in qemu, its UART on a pty (the path qemu prints). -icount
    shift=0: one instruction per virtual nanosecond, so ticks_us counts instructions."""
    proc = subprocess.Popen(["qemu-system-arm", "-machine", "mps2-an385", "-nographic", "-monitor", "null",
                             "-semihosting", "-serial", "pty", "-icount", "shift=0", "-kernel", str(firmware)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    m = re.search(r"(/dev/pts/\d+)", line)
    if not m:
        proc.kill()
        pytest.fail(f"qemu did not say which pty it opened: {line!r}")
    time.sleep(0.5)              # the firmware's banner and prompt
    yield m.group(1)
    proc.kill()
    proc.wait(timeout=10)


def args(port, model, report, n=3):
    return ["harness", "--port", port, "--board", "unix", "--model", str(model), "--images", str(n),
            "--report", str(report), "--no-progress", "--timeout", "120"]


def test_frozen_firmware_nothing_copied_bit_exact_live_heap(qemu_port, tmp_path, capsys):
    report = tmp_path / "qemu.json"
    rc = main(args(qemu_port, MODEL, report))
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "device code: frozen into the firmware (bvit 0.1.0): not copied" in out.err
    assert (f"model: the board's module:bvitmodel (frozen into the firmware) is {MODEL} (same size and "
            "header, CRC-32 0x") in out.err and "used in place, not copied" in out.err
    r = json.loads(report.read_text())
    ob = r["on_board"]
    assert ob["code"] == "frozen" and ob["file_system"] == "no file system (ENODEV)"
    assert (ob["code_copied"], ob["model_copied"], ob["model_used"]) == (False, False, "module:bvitmodel")
    assert "transfers" not in r and r["board_info"]["machine"].startswith("qemu")
    assert r["status"] == "complete" and r["summary"]["bit_exact"] == 3 and r["setup"]["backend"] == "native"
    # the live heap: a forward adds a few KB to what the loaded model holds (uncollected,
    # the same run "peaks" near the whole 137 KB heap)
    s, setup = r["summary"], r["setup"]
    assert setup["heap_peak"].startswith("live heap after a collection")
    assert s["heap_peak_max"] < setup["heap_after_load"] + 8 * 1024 < setup["heap_total"] // 2


def test_frozen_firmware_with_another_model_is_one_clear_error(qemu_port, tmp_path, capsys):
    other = make_model(tmp_path / "other.bvit", seed=5)
    rc = main(args(qemu_port, other, tmp_path / "other.json"))
    err = capsys.readouterr().err
    assert rc == 1
    line = next(ln for ln in err.splitlines() if ln.startswith("error: "))
    assert (f"the board's model module:bvitmodel (frozen into the firmware, {MODEL.stat().st_size:,} bytes, "
            "CRC-32 0x") in line and f"is not --model {other} (" in line
    assert ("and it cannot be copied to the board: no file system (ENODEV). Rebuild the firmware with this "
            f"model (scripts/build_firmware.py --model {other}, docs/firmware.md)") in line
