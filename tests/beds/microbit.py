"""Test bed: a real MicroPython on an emulated microcontroller.

Boots Debian's micro:bit MicroPython firmware (package
firmware-microbit-micropython: MicroPython 1.9.2 of 2017 on an nRF51822,
Cortex-M0, ~9 KB heap, no file system calls) under

    qemu-system-arm -M microbit -device loader,file=firmware.hex
                    -serial pty -display none -monitor none

and hands out the pseudo-terminal QEMU attaches the board's UART to.  The
REPL there answers like a board on a USB serial port: friendly REPL,
Ctrl-C, raw REPL (Ctrl-A), and ``mpremote connect PTY resume exec ...``.
Pass ``resume`` to mpremote: it skips the soft reset.

    def test_it(microbit_pty):
        out = repl_exec(microbit_pty, "print(6 * 7)")      # raw REPL -> "42\\n"
        mpremote(microbit_pty, "exec", "print(1 + 1)")     # "2\\n"
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

__all__ = [
    "FIRMWARE",
    "MicrobitError",
    "MicrobitQemu",
    "microbit_available",
    "repl_exec",
    "mpremote",
    "mpremote_command",
    # pytest fixtures
    "microbit",
    "microbit_pty",
]

FIRMWARE = Path("/usr/share/firmware-microbit-micropython/firmware.hex")
QEMU = "qemu-system-arm"
_PTY_RE = re.compile(r"char device redirected to (/dev/pts/\d+) \(label serial0\)")


class MicrobitError(RuntimeError):
    pass


def microbit_available() -> str | None:
    """None when the bed can run, else what is missing."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} not installed (Debian qemu-system-arm)"
    if not FIRMWARE.is_file():
        return f"{FIRMWARE} missing (Debian firmware-microbit-micropython)"
    try:
        import serial  # noqa: F401
    except ImportError:
        return "pyserial not installed"
    return None


class MicrobitQemu:
    """One emulated micro:bit running MicroPython; a context manager.

    ``start()`` boots it and waits until the REPL answers; ``pty`` is the
    serial device's path; ``stop()`` ends QEMU.  QEMU's own messages go to
    ``log_path``.
    """

    def __init__(self, firmware: os.PathLike | str = FIRMWARE, log_dir: os.PathLike | str | None = None):
        self.firmware = Path(firmware)
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="beds-microbit-"))
        self.log_path = self.log_dir / "qemu-microbit.log"
        self.proc: subprocess.Popen | None = None
        self.pty: str | None = None

    def command(self) -> list[str]:
        return [
            QEMU,
            "-M",
            "microbit",
            "-device",
            f"loader,file={self.firmware}",
            "-serial",
            "pty",
            "-display",
            "none",
            "-monitor",
            "none",
        ]

    def start(self, timeout: float = 30) -> str:
        missing = microbit_available()
        if missing:
            raise MicrobitError(missing)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while self.pty is None:
            m = _PTY_RE.search(self.log_path.read_text(errors="replace"))
            if m:
                self.pty = m.group(1)
            elif self.proc.poll() is not None:
                raise MicrobitError(f"QEMU exited ({self.proc.returncode}):\n{self.log_text()}")
            elif time.monotonic() > deadline:
                self.stop()
                raise MicrobitError(f"QEMU gave no pty within {timeout}s:\n{self.log_text()}")
            else:
                time.sleep(0.05)
        try:
            self.wait_for_repl(max(1.0, deadline - time.monotonic()))
        except Exception:
            self.stop()
            raise
        return self.pty

    def wait_for_repl(self, timeout: float = 30) -> None:
        """Send Ctrl-C until the friendly prompt answers."""
        import serial

        deadline = time.monotonic() + timeout
        seen = b""
        with serial.Serial(self.pty, 115200, timeout=0.2) as port:
            while time.monotonic() < deadline:
                port.write(b"\x03")
                seen += port.read(256)
                if b">>> " in seen:
                    port.reset_input_buffer()
                    return
        raise MicrobitError(f"no MicroPython prompt on {self.pty} within {timeout}s; got {seen[-200:]!r}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "MicrobitQemu":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def repl_exec(pty: str, code: str, timeout: float = 20) -> str:
    """Run ``code`` through the raw REPL (Ctrl-A ... Ctrl-D) and return what it
    printed; raise MicrobitError with the traceback if it raised."""
    import serial

    def read_until(port, marker: bytes, deadline: float) -> bytes:
        buf = b""
        while not buf.endswith(marker):
            if time.monotonic() > deadline:
                raise MicrobitError(f"timeout waiting for {marker!r} on {pty}; got {buf[-300:]!r}")
            buf += port.read(1)
        return buf

    deadline = time.monotonic() + timeout
    with serial.Serial(pty, 115200, timeout=0.1) as port:
        port.write(b"\r\x03\x03")  # interrupt whatever runs
        time.sleep(0.1)
        port.reset_input_buffer()
        port.write(b"\r\x01")  # raw REPL
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>", deadline)
        data = code.encode()
        # The board's UART receive buffer is small (MicroPython 1.9.2 for the micro:bit keeps
        # 64 bytes) and qemu delivers a write at once: more than that in one write can
        # overflow it and arrive as a SyntaxError. 32-byte writes, paced, never do.
        for i in range(0, len(data), 32):
            port.write(data[i : i + 32])
            time.sleep(0.02)
        port.write(b"\x04")
        read_until(port, b"OK", deadline)
        out = read_until(port, b"\x04", deadline)[:-1]
        err = read_until(port, b"\x04", deadline)[:-1]
        read_until(port, b">", deadline)
        port.write(b"\x02")  # back to the friendly REPL
    if err:
        raise MicrobitError(f"MicroPython raised:\n{err.decode(errors='replace')}")
    return out.decode(errors="replace").replace("\r\n", "\n")


def mpremote_command() -> list[str]:
    """mpremote from this interpreter's environment (e.g. .venv/bin), else PATH."""
    exe = Path(sys.executable).parent / "mpremote"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("mpremote")
    if found:
        return [found]
    return [sys.executable, "-m", "mpremote"]


def mpremote(pty: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """``mpremote connect PTY resume ARGS...``; stdout/stderr as text."""
    cmd = [*mpremote_command(), "connect", pty, "resume", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise MicrobitError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


if pytest is not None:

    @pytest.fixture
    def microbit(tmp_path_factory):
        """A freshly booted emulated micro:bit (MicrobitQemu), REPL ready."""
        missing = microbit_available()
        if missing:
            pytest.fail(f"{missing}; run scripts/setup.sh")  # a set-up bug, not a skip
        board = MicrobitQemu(log_dir=tmp_path_factory.mktemp("microbit"))
        board.start()
        try:
            yield board
        finally:
            board.stop()

    @pytest.fixture
    def microbit_pty(microbit) -> str:
        """Path of the emulated micro:bit's serial port (a pty), REPL ready."""
        return microbit.pty
