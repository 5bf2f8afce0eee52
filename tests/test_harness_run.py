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
from butterflyvit.harness.transport import RawRepl, SerialTransport
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
    assert f"resuming {report}: {done} image(s) done, asked for 8: {8 - done} to go" in err
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


# ------------------------------------------------------------------ a noisy line, a glitchy board

def damage_result_lines(monkeypatch, lines):
    """Make the serial line noisy: one digit of a logit in each of the first `lines` result
    lines ("BVIT i us peak base logits... crc") is changed on its way from the board to the
    host, after the board computed its checksum. Returns the list of damages done."""
    real = SerialTransport.read_some
    mark = b"BVIT "
    state = {"matched": 0, "fields": None, "left": lines}
    damaged = []

    def read_some(transport, doing):
        data = bytearray(real(transport, doing))
        for n, c in enumerate(data):
            if state["fields"] is not None:          # inside a result line
                if c == 0x20:
                    state["fields"] += 1
                elif state["fields"] >= 4 and 0x30 <= c <= 0x39:   # a digit of a logit
                    data[n] = 0x30 + (c - 0x30 + 1) % 10
                    damaged.append((chr(c), chr(data[n])))
                    state["fields"] = None
                    state["left"] -= 1
            elif state["left"]:
                m = state["matched"]
                state["matched"] = m + 1 if c == mark[m] else int(c == mark[0])
                if state["matched"] == len(mark):
                    state["matched"], state["fields"] = 0, 0
        return bytes(data)

    monkeypatch.setattr(SerialTransport, "read_some", read_some)
    return damaged


def test_damaged_result_line_is_asked_for_again(model, tmp_path, monkeypatch, capsys):
    """A digit changed on the wire fails the line's CRC-32: the host asks for the line again
    (the board prints it again, no second forward) and the report is bit-exact. A line that
    keeps arriving damaged ends the run with a clear error after a bounded number of tries."""
    b = board(tmp_path)
    report = tmp_path / "noisy.json"
    try:
        damaged = damage_result_lines(monkeypatch, 1)
        rc = main(harness_args(b.path, model, report, 3))
        out = capsys.readouterr()
        assert len(damaged) == 1 and damaged[0][0] != damaged[0][1]
        assert rc == 0, out.err
        r = json.loads(report.read_text())
        assert r["status"] == "complete" and r["summary"]["bit_exact"] == 3
        assert all(x["logits_board"] == x["logits_host"] for x in r["results"])
        assert r["results"][0]["line_resends"] == 1 and "rerun" not in r["results"][0]
        assert all("line_resends" not in x for x in r["results"][1:])
        assert r["summary"]["lines_resent"] == 1 and r["summary"]["rerun_images"] == []
        assert "serial: 1 result line(s) failed their checksum and were sent again" in out.out

        damaged = damage_result_lines(monkeypatch, 100)     # every line damaged
        rc = main(harness_args(b.path, model, tmp_path / "dead.json", 2))
        err = capsys.readouterr().err
    finally:
        b.close()
    assert rc == 1 and len(damaged) == 4
    assert "the board's result line for image 0 failed its check 4 times" in err
    assert "checksum mismatch" in err and "the serial line damages data" in err
    assert "partial report kept" in err and "Traceback" not in err
    r = json.loads((tmp_path / "dead.json").read_text())
    assert r["status"] == "failed" and r["results"] == []


# A fault on the board itself: the forward's logits come out wrong (one bit of logit 3), the
# result line is well formed and its checksum right. ONCE undoes itself after one forward.
# (_bva: the board agent the harness starts, device/bvit/agent.py.)
FAULT_ONCE = """
def _bvfault(fr):
    del _bva.net.classify_frame
    lg = type(_bva.net).classify_frame(_bva.net, fr)
    lg[3] ^= 1
    return lg
_bva.net.classify_frame = _bvfault
"""
FAULT_ALWAYS = FAULT_ONCE.replace("    del _bva.net.classify_frame\n", "")


def fault_before_first_image(monkeypatch, code):
    """Run `code` on the board just before the harness sends its first image."""
    real = RawRepl.exec
    left = [1]

    def exec_(self, src, *args, **kw):
        if left[0] and src.startswith("_bv("):
            left[0] = 0
            real(self, code, 10, doing="injecting a fault on the board")
        return real(self, src, *args, **kw)

    monkeypatch.setattr(RawRepl, "exec", exec_)


def test_board_mismatch_is_rerun_once_and_resume_counts(model, tmp_path, monkeypatch, capsys):
    b = board(tmp_path)
    report = tmp_path / "glitch.json"
    try:
        # a one-off fault: the image is run again, exact then, and the report says so
        fault_before_first_image(monkeypatch, FAULT_ONCE)
        rc = main(harness_args(b.path, model, report, 3))
        out = capsys.readouterr()
        assert rc == 0, out.err
        r = json.loads(report.read_text())
        first = r["results"][0]
        assert first["rerun"] is True and first["match"] is True
        assert first["logits_board"] == first["logits_host"]
        diff = [j for j, (a, h) in enumerate(zip(first["first_try"]["logits_board"], first["logits_host"]))
                if a != h]
        assert diff == [3] and first["first_try"]["logits_board"][3] ^ 1 == first["logits_host"][3]
        assert all("rerun" not in x for x in r["results"][1:])
        s = r["summary"]
        assert s["bit_exact"] == 3 and s["rerun_images"] == [0] and s["mismatched_images"] == []
        assert "bit-exact: 3/3" in out.out
        assert "re-run after differing from the host: [0] (exact on the re-run: [0])" in out.out

        # resume asking for fewer images than the report holds: nothing to do, said truly
        rc = main(harness_args(b.path, model, report, 2, "--resume"))
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert f"resuming {report}: 3 image(s) done, asked for 2: nothing to do" in out.err
        r2 = json.loads(report.read_text())
        assert r2["status"] == "complete" and r2["images"]["count"] == 3 and r2["resumed"] == 1
        assert r2["results"] == r["results"] and r2["summary"]["done"] == 3
        assert "bit-exact: 3/3" in out.out and "of 2" not in out.err

        # a fault that stays: the re-run differs too, and the image counts as a mismatch
        fault_before_first_image(monkeypatch, FAULT_ALWAYS)
        rc = main(harness_args(b.path, model, tmp_path / "bad.json", 1))
        out = capsys.readouterr()
    finally:
        b.close()
    assert rc == 3, out.err
    r = json.loads((tmp_path / "bad.json").read_text())
    x = r["results"][0]
    assert x["rerun"] is True and x["match"] is False and x["logits_board"] == x["first_try"]["logits_board"]
    assert r["summary"]["mismatched_images"] == [0] and r["summary"]["bit_exact"] == 0
    assert "differ: [0]" in out.out and "re-run after differing from the host: [0] (differed again)" in out.out


def test_memory_error_on_resume_says_reset(model, tmp_path, capsys):
    """A 64 KB heap cannot hold the model even with --mpy: the board frees and collects and
    tries again, then the error tells the user to reset the board and resume (and not to
    try --mpy, which is on already); resuming on the same live board says the same."""
    d = tmp_path / "tiny"
    d.mkdir()
    b = MicroPythonPty(d, heapsize="64k", path=())
    report = tmp_path / "tiny.json"
    try:
        errs = []
        for extra in ((), ("--resume",)):
            rc = main(harness_args(b.path, model, report, 2, "--mpy", *extra))
            errs.append(capsys.readouterr().err)
            assert rc == 1, errs[-1]
    finally:
        b.close()
    assert f"resuming {report}: 0 image(s) done, asked for 2: 2 to go" in errs[1]
    for err in errs:
        assert "MemoryError" in err and "again after freeing and collecting the heap" in err
        assert ("the board ran out of heap (also after freeing and collecting it): reset the board "
                "(restart its micropython process: the unix port has no reset) and run the same "
                "command again with --resume") in err
        assert "try --weight-buffer 2048 or firmware with the package frozen" in err
        assert "--mpy (" not in err and "Traceback (most recent call last)" in err
        assert "(0 of 2 images done)" in err
    r = json.loads(report.read_text())
    assert r["status"] == "failed" and r["resumed"] == 1 and r["results"] == []
