"""The device code on a second, different MicroPython: the WebAssembly port from npm
(@micropython/micropython-webassembly-pyscript 1.27, under node; `npm ci` at the
repository root installs it). It has no viper and no native module, like CircuitPython:
the pure-MicroPython kernels run, and must give the host's integers.

The `wasm_micropython` fixture runs a script there with device/ on sys.path (files are
copied into the port's in-memory file system by tests/wasm_micropython.mjs).
"""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "wasm_micropython.mjs"
PACKAGE = REPO / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


class WasmResult:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def check(self):
        if self.returncode != 0:
            raise AssertionError(f"wasm MicroPython exited {self.returncode}\n--- stdout\n"
                                 f"{self.stdout}\n--- stderr\n{self.stderr}")
        return self


@pytest.fixture(scope="session")
def wasm_micropython():
    node = shutil.which("node")
    if node is None or not PACKAGE.exists():
        raise RuntimeError("the WebAssembly MicroPython is not installed: install node and run "
                           "`npm ci` at the repository root (scripts/setup.sh)")

    def run(script, args=(), copies=None, heapsize="1m", timeout=300, check=True):
        cmd = [node, str(RUNNER), "--heapsize", heapsize, "--copy", f"{REPO / 'device'}:/device",
               "--path", "/device"]
        for src, dst in (copies or {}).items():
            cmd += ["--copy", f"{src}:{dst}"]
        cmd += [str(script), *map(str, args)]
        res = WasmResult(subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                        cwd=REPO))
        return res.check() if check else res

    return run


def test_it_is_the_webassembly_port_without_viper(wasm_micropython, tmp_path):
    script = tmp_path / "which.py"
    script.write_text("import sys\nfrom bvit import ops\n"
                      "print(sys.implementation._machine, sys.implementation.version[:2])\n"
                      "print(ops.available(), ops.load().NAME)\n")
    out = wasm_micropython(script).stdout.splitlines()
    assert "Emscripten" in out[0] and "(1, 27)" in out[0]
    assert out[1] == "['python'] python"
