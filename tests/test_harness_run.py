"""`butterflyvit harness` end to end on the unix MicroPython behind a socat pty: the device
code and a model are copied by hash, Fashion-MNIST test images go over serial, and the
board's integer logits must equal the host reference's bit for bit. A board killed mid-run
leaves a clean error and a partial report, and --resume finishes the run."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beds.micropython import MicroPythonPty
from butterflyvit.cli import main
from test_boards import make_model

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A packed model of the shipped (pico) shape, random weights: the forward is the same."""
    return make_model(tmp_path_factory.mktemp("harness") / "pico.bvit")


def board(tmp_path, name="board"):
    d = tmp_path / name
    d.mkdir()
    return MicroPythonPty(d, heapsize="512k", path=())   # device/ is not on its path: copied


def harness_args(port, model, report, n, *extra):
    return ["harness", "--port", port, "--board", "unix", "--model", str(model), "--images", str(n),
            "--report", str(report), "--no-progress", *extra]


def test_unix_board_bit_exact_report_and_plot(model, tmp_path, capsys):
    assert FMNIST.is_dir(), "Debian dataset-fashion-mnist is a set-up requirement"
    b = board(tmp_path)
    report = tmp_path / "report.json"
    try:
        t0 = time.monotonic()
        rc = main(harness_args(b.path, model, report, 20, "--power-w", "2.5"))
        elapsed = time.monotonic() - t0
    finally:
        b.close()
    out = capsys.readouterr()
    assert rc == 0, out.err
    r = json.loads(report.read_text())
    s = r["summary"]
    assert r["status"] == "complete" and s["done"] == 20 and s["bit_exact"] == 20 and s["agreement"] == 1.0
    assert [x["index"] for x in r["results"]] == list(range(20))
    assert all(x["logits_board"] == x["logits_host"] for x in r["results"])
    assert "bit-exact: 20/20 images (100.0%)" in out.out
    # copied by hash: every device file and the model, then checked
    files = r["transfers"][0]["files"]
    assert {"bvit/model.py", "pico.bvit"} <= {f["path"] for f in files}
    assert all(f["action"] == "copied" for f in files)
    assert (b.workdir / "pico.bvit").read_bytes() == model.read_bytes()
    # timings, heap, energy both ways with their sources
    lat = s["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["max"] and lat["mean"] * 20 / 1000 < elapsed
    assert r["setup"]["ram_buffers"] > 30_000 and s["heap_peak_max"] > r["setup"]["ram_buffers"]
    e = r["energy"]
    assert e["measured"]["power_w"] == 2.5
    assert e["measured"]["energy_per_inference_j"] == pytest.approx(lat["mean"] / 1000 * 2.5)
    assert "Horowitz" in e["analytical"]["source"] and e["analytical"]["constants_pj"]["int32_mult"] == 3.1
    assert e["analytical"]["saving_vs_moe_fp32"] > 0.99
    png = Path(r["plot"])
    assert png == report.with_suffix(".png") and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["board_info"]["implementation"] == "micropython"


def _run_cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "butterflyvit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_board_dies_mid_run_then_resume(model, tmp_path):
    report = tmp_path / "partial.json"
    b = board(tmp_path, "first")
    try:
        proc = _run_cli(harness_args(b.path, model, report, 8))
        _wait_for_results(proc, report, 3)   # kill the board once three images are in the report
        b.kill_board()
        out, err = proc.communicate(timeout=60)
    finally:
        b.close()
    assert proc.returncode == 1, (out, err)
    assert "harness failed while classifying (image" in err and "disconnected" in err
    assert "partial report kept" in err and "--resume" in err and "Traceback" not in err
    r = json.loads(report.read_text())
    assert r["status"] == "failed" and r["error"]["disconnected"] is True
    done = len(r["results"])
    assert 3 <= done < 8 and all(x["match"] for x in r["results"])
    assert r["summary"]["done"] == done

    # a new board (fresh process, empty folder): resume copies the files and finishes
    b2 = board(tmp_path, "second")
    try:
        proc = _run_cli(harness_args(b2.path, model, report, 8, "--resume"))
        out, err = proc.communicate(timeout=120)
    finally:
        b2.close()
    assert proc.returncode == 0, err
    assert f"resuming {report}: {done} of 8 images done" in err
    r = json.loads(report.read_text())
    assert r["status"] == "complete" and r["resumed"] == 1
    assert [x["index"] for x in r["results"]] == list(range(8))
    assert r["summary"]["bit_exact"] == 8 and len(r["transfers"]) == 2


def _wait_for_results(proc, report, n, seconds=90):
    """Wait until the harness has written n results to its report."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if len(json.loads(report.read_text())["results"]) >= n:
                return
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the harness made no progress"
        time.sleep(0.05)


def test_timeout_keeps_partial_report(model, tmp_path):
    """A board that hangs mid-run (still connected, silent): a clean timeout, partial report."""
    report = tmp_path / "t.json"
    b = board(tmp_path)
    try:
        proc = _run_cli(harness_args(b.path, model, report, 8, "--timeout", "3"))
        _wait_for_results(proc, report, 2)
        b.hang_board()
        out, err = proc.communicate(timeout=60)
    finally:
        b.close()
    assert proc.returncode == 1, (out, err)
    assert "did not answer within 3 s" in err or "silent for 3 s" in err, err
    assert "partial report kept" in err and "Traceback" not in err
    r = json.loads(report.read_text())
    assert r["status"] == "failed" and r["error"]["type"] == "BoardTimeout"
    assert 2 <= len(r["results"]) < 8 and all(x["match"] for x in r["results"])


def test_command_errors(model, tmp_path, capsys):
    assert main(harness_args("/nonexistent/tty", model, tmp_path / "x.json", 1)) == 1
    assert "cannot open serial port /nonexistent/tty" in capsys.readouterr().err
    assert main(["harness", "--port", "/dev/null", "--board", "nope", "--model", str(model),
                 "--report", str(tmp_path / "x.json")]) == 2
    assert "unknown board 'nope'" in capsys.readouterr().err
    assert main(harness_args("/dev/null", tmp_path / "missing.bvit", tmp_path / "x.json", 1)) == 1
    assert "missing.bvit not found" in capsys.readouterr().err
    assert main(harness_args("/dev/null", model, tmp_path / "x.json", 0)) == 2
    other = make_model(tmp_path / "other.bvit", seed=5)
    (tmp_path / "r.json").write_text(json.dumps({"model": {"sha256": "0" * 64}, "results": []}))
    assert main(harness_args("/dev/null", other, tmp_path / "r.json", 1, "--resume")) == 1
    assert "cannot resume" in capsys.readouterr().err


def test_mpy_precompiled_package_on_a_96k_board(model, tmp_path, capsys):
    """--mpy: the package precompiled for the board's mpy version and architecture (from
    sys.implementation._mpy) leaves room for the model on a 96 KB heap, where compiling the
    .py files on the board does not; stale .py copies are removed so the .mpy are imported."""
    d = tmp_path / "small"
    d.mkdir()
    b = MicroPythonPty(d, heapsize="96k", path=())
    report = tmp_path / "small.json"
    try:
        rc = main(harness_args(b.path, model, report, 3, "--mpy"))
        first = capsys.readouterr()
        assert rc == 0, first.err
        assert "bit-exact: 3/3" in first.out
        assert (d / "bvit" / "model.mpy").is_file() and not (d / "bvit" / "model.py").exists()
        rc = main(harness_args(b.path, model, tmp_path / "py.json", 1))
        err = capsys.readouterr().err
        assert rc == 1 and "MemoryError" in err and "try --mpy" in err
        assert "removed stale copies on the board: bvit/__init__.mpy" in err
    finally:
        b.close()
