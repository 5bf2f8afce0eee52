"""The emulated micro:bit bed: Debian's MicroPython firmware under QEMU
answers on a pty like a board on a serial port."""

from __future__ import annotations

import re
import time

import pytest

from beds.microbit import *  # noqa: F401,F403  (fixtures)
from beds.microbit import MicrobitError, mpremote, repl_exec


def test_friendly_repl_computes(microbit_pty):
    import serial

    expr = b"sum(i * i for i in range(1, 21)) * 3 + 7"
    with serial.Serial(microbit_pty, 115200, timeout=0.1) as port:
        port.write(b"\x03")
        time.sleep(0.2)
        port.reset_input_buffer()
        port.write(expr + b"\r")
        buf, deadline = b"", time.monotonic() + 10
        # the echo, then the answer, then a fresh prompt
        while not re.search(re.escape(expr) + rb"\r\n(.*)\r\n>>> ", buf):
            assert time.monotonic() < deadline, f"no answer in {buf!r}"
            buf += port.read(64)
    answer = re.search(re.escape(expr) + rb"\r\n(.*)\r\n>>> ", buf).group(1).decode()
    assert answer == str(sum(i * i for i in range(1, 21)) * 3 + 7)  # 8617


def test_raw_repl_exec_and_errors(microbit_pty):
    import sys as host_sys

    out = repl_exec(microbit_pty, "import sys\nprint(sys.platform, 2 ** 40, [x % 7 for x in range(10)])")
    assert out == f"microbit {2 ** 40} {[x % 7 for x in range(10)]}\n"
    with pytest.raises(MicrobitError, match="ZeroDivisionError"):
        repl_exec(microbit_pty, "print(1 // 0)")
    # the board keeps working after an error
    assert repl_exec(microbit_pty, "print(int('7f', 16))") == "127\n"
    assert host_sys.platform != "microbit"


def test_mpremote_exec(microbit_pty):
    proc = mpremote(microbit_pty, "exec", "print(1 + 1); print(sum(range(101)))")
    assert proc.stdout.replace("\r\n", "\n") == "2\n5050\n"
    # and the REPL still answers afterwards
    assert repl_exec(microbit_pty, "print('ok')") == "ok\n"
