"""Test bed: MicroPython firmware built by scripts/build_firmware.py, run here.

- `QemuRepl`: the qemu port's firmware on an emulated mps2-an385 board (a Cortex-M3), driven
  over its raw REPL on qemu's stdio. With `-icount shift=0` one virtual nanosecond is one
  instruction, so `time.ticks_us` differences on it x 1000 are instructions, the same on
  every run.
- `switches_for_missing_submodules`: the make switches that build the unix port from a
  checkout without its optional submodules (btree, ssl: nothing of ours uses them).

Used by tests/test_firmware.py and benchmarks/board_path.py.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["QemuError", "QemuRepl", "ICOUNT", "switches_for_missing_submodules"]

ICOUNT = ("-icount", "shift=0")  # one instruction per virtual nanosecond: a deterministic clock


class QemuError(RuntimeError):
    """The emulated board did not answer as the raw REPL should (message: what it said)."""


class QemuRepl:
    """The qemu port's firmware on mps2-an385, its UART on stdin/stdout (raw REPL)."""

    def __init__(self, elf, *extra):
        if not shutil.which("qemu-system-arm"):
            raise QemuError("qemu-system-arm not found on PATH (Debian: apt install qemu-system-arm)")
        # -serial stdio, not mon:stdio: the monitor would take the raw REPL's Ctrl-A
        self.proc = subprocess.Popen(
            ["qemu-system-arm", "-machine", "mps2-an385", "-nographic", "-monitor", "null",
             "-semihosting", "-serial", "stdio", *extra, "-kernel", str(elf)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            self.send(b"\r")  # qemu's stdio only starts once it has read something
            self.read_until(b">>> ", 30)
            self.send(b"\x01")
            self.read_until(b"raw REPL; CTRL-B to exit\r\n>", 10)
        except BaseException:
            self.close()
            raise

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_until(self, marker, timeout):
        buf, end = b"", time.monotonic() + timeout
        while marker not in buf:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, end - time.monotonic()))
            chunk = os.read(self.proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                why = "timed out" if time.monotonic() >= end else "qemu ended"
                raise QemuError(f"qemu: no {marker!r} within {timeout} s ({why}); got {buf[-800:]!r}")
            buf += chunk
        return buf

    def exec(self, code, timeout=600):
        """Run code in the raw REPL; its output. A traceback on the board raises QemuError."""
        data = code.encode()
        for i in range(0, len(data), 256):  # the UART has a small buffer
            self.send(data[i:i + 256])
            time.sleep(0.01)
        self.send(b"\x04")
        out = self.read_until(b"\x04>", timeout)
        if not out.startswith(b"OK"):
            raise QemuError(f"qemu: the raw REPL did not take the code: {out[-800:]!r}")
        text, _, err = out[2:].partition(b"\x04")
        err = err.strip(b"\x04>").decode(errors="replace").strip()
        if err:  # the exception's line first, then the whole traceback
            raise QemuError(f"the board raised {err.splitlines()[-1]}\n{err}")
        return text.decode()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:  # unflushed input to a process that is gone
                pass


def switches_for_missing_submodules(top: Path):
    """Build what this checkout allows: modules whose submodule is absent switched off."""
    def empty(sub):
        d = Path(top) / sub
        return not d.is_dir() or all(p.name == ".git" for p in d.iterdir())

    return [flag for sub, flag in (("lib/berkeley-db-1.xx", "MICROPY_PY_BTREE=0"),
                                   ("lib/mbedtls", "MICROPY_PY_SSL=0")) if empty(sub)]
