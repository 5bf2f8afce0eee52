"""benchmarks/board_path.py: classify end to end on MicroPython firmware.

Without a checkout: its argument errors, the RP2040 estimate, the JSON and Markdown it writes
(from a small synthetic result), and its unix session on the PyPI MicroPython (viper, a model
standing in for a frozen one). With MICROPYTHON_DIR: a real run, building the firmware.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import board_path as bp  # noqa: E402

MPY_DIR = os.environ.get("MICROPYTHON_DIR")


def error_of(capsys, argv):
    assert bp.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("board_path: error: "), err
    return lines[0]


def test_argument_errors_are_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("MICROPYTHON_DIR", raising=False)
    assert "no MicroPython checkout: pass --micropython DIR or set MICROPYTHON_DIR" in error_of(capsys, [])
    assert f"--micropython {tmp_path}: not a MicroPython checkout" in error_of(
        capsys, ["--micropython", str(tmp_path)])
    assert "--backends 'native,fast': choose from native, viper, python" in error_of(
        capsys, ["--backends", "native,fast"])
    assert "--ports 'qemu,rp2': choose from qemu, qemu-m0plus, unix" in error_of(capsys, ["--ports", "qemu,rp2"])
    assert "--images 0: give at least 1" in error_of(capsys, ["--images", "0"])
    assert f"--model {tmp_path / 'no.bvit'}: no such file" in error_of(
        capsys, ["--model", str(tmp_path / "no.bvit")])
    assert f"--firmware-dir {tmp_path}: no unix/micropython" in error_of(
        capsys, ["--firmware-dir", str(tmp_path), "--ports", "unix"])
    monkeypatch.setenv("MICROPYTHON_DIR", str(tmp_path / "elsewhere"))  # the default comes from it
    assert "elsewhere: not a MicroPython checkout" in error_of(capsys, ["--ports", "unix"])


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        bp.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--micropython DIR", "--images N", "--backends LIST", "--ports LIST", "--out PREFIX",
                "--firmware-dir DIR", "$MICROPYTHON_DIR"):
        assert opt in out


def test_rp2040_estimate():
    # instructions x CPI 1.4 / 133 MHz: 95 M instructions are one second
    assert bp.CPI == 1.4 and bp.RP2040_HZ == 133e6
    assert bp.rp2040_ms(95_000_000) == pytest.approx(1000.0)
    assert bp.rp2040_ms(1_135_819_500) == pytest.approx(11956.0, abs=0.1)
    assert bp.rp2040_ms(0) == 0


def record(times, *, kernels, heap=(40000, 41000), exact=None, unit=1):
    """A backend record as backend_record makes it: per image time, heap, logits, exact."""
    exact = exact or [True] * len(times)
    return {"kernels": kernels, "heap_total": 140032, "heap_after_load": 39000,
            "images": [{"time": t * unit, "time_collected": t * unit + 7000, "heap_peak": heap[1] + i,
                        "heap_before": heap[0], "logits": [i, -i], "exact": ok}
                       for i, (t, ok) in enumerate(zip(times, exact))]}


def synthetic(qemu_viper_exact=(True, True, True)):
    return {
        "qemu": {"machine": "mps2-an385 (Cortex-M3), QEMU 7.2, -icount shift=0", "micropython": "v",
                 "backends": {"native": record([110e6, 90e6, 100e6], kernels="native"),
                              "viper": record([600e6, 610e6, 590e6], kernels="viper",
                                              exact=list(qemu_viper_exact))}},
        "unix": {"heap": "96k", "board": "linux", "micropython": "v",
                 "backends": {"native": record([250_000, 260_000, 255_000], kernels="native"),
                              "viper": {"error": "MemoryError('memory allocation failed')"}}},
    }


META = {"command": "python benchmarks/board_path.py --images 3", "micropython": "MicroPython v1.28.0",
        "model": "models/pico-fmnist.bvit", "model_bytes": 477392, "images": 3,
        "frames": "Fashion-MNIST test images 0-2, 28x28 GRAYSCALE",
        "backends": ["native", "viper"], "wall_s": 12.5, "firmware": "built by this run",
        "host": {"cores": 2, "load_average": 3.5}}


def test_writer_on_a_synthetic_result(tmp_path):
    res = bp.summarize(synthetic(), META)
    md = bp.write(res, tmp_path / "bp")
    got = json.loads((tmp_path / "bp.json").read_text())
    assert (tmp_path / "bp.md").read_text() == md
    assert got["instructions_per_image"] == 100_000_000  # the median
    assert got["viper_instructions_per_image"] == 600_000_000
    assert got["ratio_viper_to_native"] == 6.0
    assert got["ms_rp2040"] == pytest.approx(1052.6)
    assert got["images"] == 3 and got["command"] == META["command"]
    assert got["micropython"] == "MicroPython v1.28.0"
    assert got["heap_peak_bytes"] == {"native": 41002, "viper": 41002}
    assert got["exact"] is False  # unix viper failed
    assert got["targets_met"] == {"ms_rp2040": False, "ratio_viper_to_native": True,
                                  "heap_peak_bytes": True, "exact": False}
    assert got["unix"]["backends"]["native"] == {"median_us": 255000, "min_us": 250000,
                                                 "heap_peak_bytes": 41002, "exact": "3/3"}
    assert "MemoryError" in got["unix"]["backends"]["viper"]["error"]
    assert got["ports"]["qemu"]["backends"]["native"]["images"][2]["time"] == 100e6
    assert "| native | 3/3 | 100.0 M | 90.0 - 110.0 M | 1,053 ms | 100.0 M | 40.0 KB | 39.1 KB |" in md
    assert "| native >= 5x fewer instructions than viper | 6.0x | met |" in md
    assert "| RP2040 estimate <= 1000 ms per image (native) | 1,053 ms | **not met** |" in md
    assert "host with 2 cores, load average 3.5" in md
    assert "| native | 3/3 | 255.0 | 250.0 | 262.0 | 40.0 KB | 39.1 KB |" in md
    assert "| viper | - | failed: MemoryError('memory allocation failed') |" in md
    assert "Cortex-M3 (ARMv7-M, Thumb-2) instructions" in md and "CPI 1.38" in md
    assert META["command"] in md
    assert "Images: Fashion-MNIST test images 0-2, 28x28 GRAYSCALE frames sent to the board" in md


def test_one_wrong_image_makes_the_run_inexact(tmp_path):
    ports = synthetic((True, False, True))
    del ports["unix"]
    res = bp.summarize(ports, META)
    assert res["exact"] is False and "unix" not in res
    assert "| viper | 2/3 |" in bp.markdown(res)
    ports["qemu"]["backends"]["viper"] = record([600e6] * 3, kernels="viper")
    assert bp.summarize(ports, META)["exact"] is True


def test_a_target_without_its_measurement_is_not_called_missed():
    ports = synthetic()
    del ports["unix"]
    del ports["qemu"]["backends"]["viper"]     # --backends native: no ratio to viper
    md = bp.markdown(bp.summarize(ports, META))
    assert "| native >= 5x fewer instructions than viper | -x | not measured in this run |" in md
    assert "| RP2040 estimate <= 1000 ms per image (native) | 1,053 ms | **not met** |" in md


def test_unix_session_on_a_real_micropython(tmp_path):
    """The unix session script and its parsing, on the PyPI unix port (no native module, so
    viper), the model given as a module `bvitmodel` as the firmware freezes it."""
    model = REPO / "models" / "pico-fmnist.bvit"
    if not model.is_file():
        pytest.skip("the shipped model is not in this checkout")
    try:
        frames = bp.load_frames(1)
    except bp.BenchError as exc:
        pytest.skip(str(exc))
    (tmp_path / "bvitmodel.py").write_text(f"with open({str(model)!r}, 'rb') as f:\n    MODEL = f.read()\n")
    exe = Path(sys.executable).parent / "micropython"
    want = bp.host_logits(model, frames)
    port = bp.run_unix(exe, frames, want, ["viper", "native"], model, "2m",
                       path=f"{tmp_path}:{REPO / 'device'}")
    assert port["micropython"].startswith("MicroPython ")  # sys.version after "; "
    viper = port["backends"]["viper"]
    assert viper["kernels"] == "viper" and len(viper["images"]) == 1
    im = viper["images"][0]
    assert im["exact"] and im["logits"] == want[0]
    assert im["time"] > 0 and im["heap_peak"] >= im["heap_before"] > 0
    # this MicroPython has no bvitnative: that backend fails alone, with the board's reason
    assert "bvitnative" in port["backends"]["native"]["error"]


def test_a_colour_model_gets_cifar10_rgb565_frames(tmp_path, monkeypatch):
    """A colour model is sent CIFAR-10 test images as 32x32 RGB565 frames (here a tiny RGB
    model and CIFAR-10 batches in the official layout with random pixels), bit-exact on the
    PyPI unix port; without --data it says what to give."""
    import pickle

    from test_hostile_files import bytes_keys, cifar_batches, write_cifar
    from test_intmodel import tiny_bytes

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tmp_path / "rgb.bvit"
    model.write_bytes(tiny_bytes("rgb"))
    data = write_cifar(tmp_path / "cifar", {k: bytes_keys(v) for k, v in cifar_batches(n=3).items()},
                       lambda o: pickle.dumps(o, protocol=4))
    frames = bp.load_frames(3, str(data), model)
    assert (frames.w, frames.h, frames.fmt) == (32, 32, "RGB565")
    assert [len(f) for f in frames.data] == [32 * 32 * 2] * 3
    assert frames.what == "CIFAR-10 test images 0-2, 32x32 RGB565"
    (tmp_path / "bvitmodel.py").write_text(f"with open({str(model)!r}, 'rb') as f:\n    MODEL = f.read()\n")
    want = bp.host_logits(model, frames)
    port = bp.run_unix(Path(sys.executable).parent / "micropython", frames, want, ["viper"], model,
                       "2m", path=f"{tmp_path}:{REPO / 'device'}")
    assert [im["exact"] for im in port["backends"]["viper"]["images"]] == [True] * 3
    with pytest.raises(bp.BenchError, match="a colour model: give --data PATH, CIFAR-10"):
        bp.load_frames(1, None, model)
    with pytest.raises(bp.BenchError, match="--images 4: .* has 3 test images"):
        bp.load_frames(4, str(data), model)


@pytest.mark.skipif(not MPY_DIR, reason="set MICROPYTHON_DIR to a MicroPython checkout (v1.28.0, "
                    "docs/firmware.md) to build firmware")
def test_a_real_run_builds_and_is_exact(tmp_path):
    ports = "qemu,unix" if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm") else "unix"
    rc = bp.main(["--micropython", MPY_DIR, "--images", "1", "--backends", "native", "--ports", ports,
                  "--build-dir", str(tmp_path / "fw"), "--out", str(tmp_path / "bp")])
    res = json.loads((tmp_path / "bp.json").read_text())
    assert rc == 0 and res["exact"] is True
    assert res["unix"]["backends"]["native"]["exact"] == "1/1"
    if "qemu" in ports:
        assert res["instructions_per_image"] > 1_000_000
        assert res["ms_rp2040"] == pytest.approx(bp.rp2040_ms(res["instructions_per_image"]), abs=0.1)
