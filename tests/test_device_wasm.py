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

import numpy as np
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


AGENT = REPO / "device" / "bvit" / "agent.py"     # the board agent: runs a JSON job file


def test_models_bit_exact_on_wasm(wasm_micropython, tmp_path):
    """Tiny models (plain, smoothed, RGB) and one Fashion-MNIST image through the
    Fashion-MNIST-size model on the WebAssembly MicroPython: the pure kernels, the host's
    logits."""
    from test_device_model import FMNIST, pico_random_model
    from test_intmodel import tiny_bytes, tiny_frames, tiny_model
    from butterflyvit.data import read_idx
    from butterflyvit.harness.protocol import job, read_jobs, write_jobs
    from butterflyvit.intmodel import IntModel
    from butterflyvit.modelfile import encode_model

    jobs, want, copies = [], [], {}
    frames = []
    for i, (fmt, w, h, buf) in enumerate(tiny_frames()):
        name = f"/f/t{i}_{w}x{h}" + (".gray" if fmt == "GRAYSCALE" else ".rgb565")
        (tmp_path / name.split("/")[-1]).write_bytes(buf)
        copies[tmp_path / name.split("/")[-1]] = name
        frames.append(name)
    for variant in ("plain", "smooth", "rgb"):
        (tmp_path / f"{variant}.bvit").write_bytes(tiny_bytes(variant))
        copies[tmp_path / f"{variant}.bvit"] = f"/m/{variant}.bvit"
        m = tiny_model(variant)
        ref = [[int(v) for v in m.forward_frame(buf, w, h, fmt).logits] for fmt, w, h, buf in tiny_frames()]
        for source, wb in (("file", 4096), ("file", 30), ("bytes", 4096)) if variant == "smooth" \
                else (("file", 4096),):
            jobs.append(job(f"/m/{variant}.bvit", frames, weight_buffer=wb, in_ram=source == "bytes"))
            want.append(ref)
    arrays, meta = pico_random_model()
    (tmp_path / "pico.bvit").write_bytes(encode_model(arrays, meta))
    copies[tmp_path / "pico.bvit"] = "/m/pico.bvit"
    img = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")[7]
    (tmp_path / "fm7_28x28.gray").write_bytes(img.tobytes())
    copies[tmp_path / "fm7_28x28.gray"] = "/f/fm7_28x28.gray"
    jobs.append(job("/m/pico.bvit", ["/f/fm7_28x28.gray"]))
    want.append([[int(v) for v in IntModel.from_arrays(arrays, meta).forward_pixels(img[None]).logits]])
    copies[write_jobs(tmp_path / "jobs.json", jobs)] = "/jobs.json"
    res = wasm_micropython(AGENT, args=["/jobs.json"], copies=copies, heapsize="2m")
    got = read_jobs(res.stdout)
    assert [g["setup"]["backend"] for g in got] == ["python"] * len(jobs)
    assert [[r["logits"] for r in g["results"]] for g in got] == want


def test_classify_script_on_wasm(wasm_micropython, tmp_path):
    from test_intmodel import tiny_bytes, tiny_model

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (10, 13), dtype=np.uint8)
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("smooth"))
    (tmp_path / "cam_13x10.gray").write_bytes(img.tobytes())
    res = wasm_micropython(REPO / "device" / "classify.py",
                           args=["--model", "/b/model.bvit", "--input", "/b/cam_13x10.gray", "--logits"],
                           copies={tmp_path / "model.bvit": "/b/model.bvit",
                                   tmp_path / "cam_13x10.gray": "/b/cam_13x10.gray"})
    ref = tiny_model("smooth").forward_frame(img.tobytes(), 13, 10, "GRAYSCALE")
    assert f"logits: {' '.join(str(int(v)) for v in ref.logits)}" in res.stdout
    assert "kernels: python" in res.stdout and "/b/cam_13x10.gray: 13x10 GRAYSCALE" in res.stdout
    bad = wasm_micropython(REPO / "device" / "classify.py", args=["--model", "/nothere.bvit"],
                           check=False)
    assert bad.returncode == 1 and "no model file '/nothere.bvit' on the board" in bad.stdout
