"""`butterflyvit harness` end to end on the unix MicroPython behind a socat pty: the device
code and a model are copied by hash, the test images of the model's own data set (or your
own, --images-from) go over serial as the model's frames, and the board's integer logits
must equal the host reference's bit for bit and its top-1 beat chance. A board killed
mid-run leaves a clean error and a partial report, and --resume finishes the run."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beds.micropython import MicroPythonPty
from matplotlib.ticker import MaxNLocator

from butterflyvit.cli import main
from butterflyvit.harness.report import plot_report
from butterflyvit.harness.transport import RawRepl, SerialTransport
from test_boards import make_model

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
TRAINED = REPO / "models" / "pico-fmnist.bvit"      # the shipped model, trained on Fashion-MNIST


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


def test_unix_board_bit_exact_report_and_plot(tmp_path, capsys):
    """The shipped trained model on 20 test images of the data set its file records:
    bit-exact, top-1 well above chance, exit 0; the report, its energy and its plot."""
    assert FMNIST.is_dir(), "Debian dataset-fashion-mnist is a set-up requirement"
    model = tmp_path / "pico.bvit"
    shutil.copyfile(TRAINED, model)
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
    # the images: Fashion-MNIST's test split, named in the model file, as GRAYSCALE frames
    im = r["images"]
    assert (im["source"], im["dataset"], im["split"]) == ("dataset", "fashion-mnist", "test")
    assert im["chosen_by"] == "the model file's calibration data set" and im["classes_matched"] == "by name"
    assert {(x["format"], x["width"], x["height"]) for x in r["results"]} == {("GRAYSCALE", 28, 28)}
    # top-1 against the labels: the trained model is far above chance, no warning
    assert s["labelled"] == 20 and s["accuracy_board"] == s["accuracy_host"] >= 0.6
    assert s["top1_check"]["verdict"] == "ok" and s["top1_check"]["threshold"] == pytest.approx(0.15)
    assert f"top-1: board {100 * s['accuracy_board']:.1f}%" in out.out and "warning" not in out.err
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
    # the plot of 20 images: a histogram with integer counts; measured and analytical
    # energy on their own axes, with the line that says why they differ
    fig = plot_report(r, tmp_path / "again.png")
    lat, dist, measured, analytical = fig.axes
    assert dist.get_title() == "latency histogram (20 images)" and dist.get_ylabel() == "images"
    assert isinstance(dist.yaxis.get_major_locator(), MaxNLocator)
    assert all(float(t).is_integer() for t in dist.get_yticks())
    assert all(float(t).is_integer() for t in lat.get_xticks())
    assert measured.get_ylabel() == "mJ per image" and analytical.get_ylabel().startswith("\u00b5J per image")
    ratio = e["measured"]["ratio_to_analytical"]
    assert any(f"Why measured is {ratio:,.0f}x analytical" in t.get_text() for t in fig.texts)


def test_untrained_model_is_near_chance_warning_and_exit_4(model, tmp_path, capsys):
    """Random weights, bit-exact on the board but wrong about the labels: the run says top-1
    is near chance and exits 4 (docs/harness.md), not 0."""
    b = board(tmp_path)
    report = tmp_path / "random.json"
    try:
        rc = main(harness_args(b.path, model, report, 20))
    finally:
        b.close()
    out = capsys.readouterr()
    r = json.loads(report.read_text())
    s = r["summary"]
    assert rc == 4, out.err
    assert s["bit_exact"] == 20 and s["labelled"] == 20 and s["top1_check"]["verdict"] == "near-chance"
    assert s["accuracy_board"] < 0.15
    assert "bit-exact: 20/20" in out.out
    assert (f"warning: top-1 on the board is {100 * s['accuracy_board']:.1f}% over 20 labelled images, "
            "near chance (10.0% for 10 classes; below 15.0% counts as near chance)") in out.err
    # the model file records no data set: the 28x28 grey default, and the classes by position
    assert r["images"]["dataset"] == "fashion-mnist" and r["images"]["classes_matched"] == "by position"
    assert "default" in r["images"]["chosen_by"]


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
    .py files on the board does not; stale .py copies are removed so the .mpy are imported.
    With the 2 KB weight buffer docs/device.md gives 96 KB boards: at 4 KB the heap's
    fragmentation decides, run by run, whether a 1 KB block is left."""
    d = tmp_path / "small"
    d.mkdir()
    b = MicroPythonPty(d, heapsize="96k", path=())
    report = tmp_path / "small.json"
    try:
        rc = main(harness_args(b.path, model, report, 3, "--mpy", "--weight-buffer", "2048"))
        first = capsys.readouterr()
        assert rc == 0, first.err
        assert "bit-exact: 3/3" in first.out
        assert (d / "bvit" / "model.mpy").is_file() and not (d / "bvit" / "model.py").exists()
        rc = main(harness_args(b.path, model, tmp_path / "py.json", 1, "--weight-buffer", "2048"))
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


# ------------------------------------------------------------------ an RGB model and your own images

CLASSES = ["left", "right", "top"]


def rgb_model(path, data_dir=None, seed=1234):
    """A tiny 3-channel model (8x8 input, 3 classes named like test_folder_dataset's shape
    folders), random weights; its metadata records the folder data set at data_dir, as
    `butterflyvit pack --dataset folder --data DIR` does."""
    from test_intmodel import TINY_MEAN, TINY_RANGES, TINY_STD, tiny_config, tiny_params

    from butterflyvit.modelfile import write_model
    from butterflyvit.quantize import build_integer_model

    cfg = tiny_config(in_channels=3, num_classes=3)
    extra = {"calibration": {"dataset": "folder", "split": "train", "seed": 0, "data": str(data_dir)},
             "source": {"dataset": "folder"}} if data_dir else None
    arrays, meta = build_integer_model(cfg, tiny_params(cfg, seed), TINY_RANGES, [TINY_MEAN] * 3,
                                       [TINY_STD] * 3, CLASSES, extra)
    write_model(path, arrays, meta)
    return path


def test_rgb_model_gets_rgb565_frames_of_its_own_folder_data_set(tmp_path, capsys):
    """A 3-channel model packed on a folder data set: the harness sends that folder's test
    split (the hash split, fitted to 8x8) as RGB565 frames, bit-exact, labels by class name.
    Fewer images than asked for: all of them, said so; too few labels for a verdict: exit 0."""
    from test_folder_dataset import make_folder

    from butterflyvit.data import load_folder

    photos = make_folder(tmp_path / "photos", per_class=15)
    model = rgb_model(tmp_path / "rgb.bvit", photos)
    want = load_folder(photos, image_size=8, cache_dir=tmp_path / "cache").test
    b = board(tmp_path)
    report = tmp_path / "rgb.json"
    try:
        rc = main(harness_args(b.path, model, report, 20, "--cache-dir", str(tmp_path / "cache")))
    finally:
        b.close()
    out = capsys.readouterr()
    assert rc == 0, out.err
    r = json.loads(report.read_text())
    n = len(want)
    assert 0 < n < 20
    assert f"the folder test split holds {n} image(s) from image 0: sending {n}, not 20" in out.err
    assert r["images"]["dataset"] == "folder" and r["images"]["data"] == str(photos)
    assert r["images"]["classes"] == CLASSES and r["images"]["classes_matched"] == "by name"
    assert [x["label"] for x in r["results"]] == want.labels.tolist()
    assert {(x["format"], x["width"], x["height"]) for x in r["results"]} == {("RGB565", 8, 8)}
    assert r["summary"]["bit_exact"] == n and all(x["logits_board"] == x["logits_host"] for x in r["results"])
    # the host's logits are those of the data set's pixels sent as RGB565
    from butterflyvit.intmodel import IntModel, rgb_to_rgb565
    ref = IntModel.load(model)
    first = want.images[0].numpy().transpose(1, 2, 0)
    host = ref.forward_frame(rgb_to_rgb565(first), 8, 8, "RGB565")
    assert r["results"][0]["logits_host"] == [int(v) for v in host.logits]
    assert r["summary"]["top1_check"]["verdict"] == "too-few-labels"
    assert "fewer than 20 labelled images: no near-chance check" in out.out
    # the plot of a handful of images: one dot per image, no histogram
    fig = plot_report(r, tmp_path / "few.png")
    dist = fig.axes[1]
    assert dist.get_title().startswith(f"latency of each image ({n} images")
    assert not dist.patches and len(dist.lines[0].get_xdata()) == n


def test_images_from_folder_labelled_and_not(tmp_path, capsys):
    """--images-from DIR: class folders (labels by name), loose images (no label), any size
    and format, fitted to the model's 8x8 and sent as RGB565, bit-exact."""
    from test_folder_dataset import shape_image

    mine = tmp_path / "mine"
    for cls in ("left", "top"):
        (mine / cls).mkdir(parents=True)
        for i in range(2):
            shape_image(cls, i, (40, 30)).save(mine / cls / f"{cls}{i}.png")
    shape_image("right", 9, (17, 23)).save(mine / "loose.jpg")
    model = rgb_model(tmp_path / "rgb.bvit")          # records no data set: --images-from needs none
    b = board(tmp_path)
    report = tmp_path / "mine.json"
    try:
        rc = main(harness_args(b.path, model, report, 20, "--images-from", str(mine)))
    finally:
        b.close()
    out = capsys.readouterr()
    assert rc == 0, out.err
    r = json.loads(report.read_text())
    assert r["images"]["source"] == "images-from" and r["images"]["labelled"] == 4
    assert [(x["file"], x["label"]) for x in r["results"]] == [
        ("loose.jpg", None), ("left/left0.png", 0), ("left/left1.png", 0),
        ("top/top0.png", 2), ("top/top1.png", 2)]
    assert {(x["format"], x["width"], x["height"]) for x in r["results"]} == {("RGB565", 8, 8)}
    assert r["summary"]["bit_exact"] == 5 and r["summary"]["labelled"] == 4
    assert "top-1: board" in out.out and "labels of 4 of the 5 images" in out.out


def test_image_source_errors(tmp_path, capsys):
    """One line each, naming what is missing and what to give."""
    model = rgb_model(tmp_path / "nodata.bvit")
    args = harness_args("/dev/null", model, tmp_path / "x.json", 2)
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {model} records no data set it was calibrated on: give --dataset NAME "
                   "(and --data PATH) or --images-from DIR")
    gone = rgb_model(tmp_path / "gone.bvit", tmp_path / "moved-away")
    assert main(harness_args("/dev/null", gone, tmp_path / "x.json", 2)) == 1
    err = capsys.readouterr().err
    assert "cannot load the model's test images, data set 'folder'" in err and "moved-away" in err
    assert err.strip().endswith("give --data PATH or --images-from DIR") and len(err.strip().splitlines()) == 1
    (tmp_path / "odd" / "cats").mkdir(parents=True)
    from test_folder_dataset import shape_image
    shape_image("left", 0, (8, 8)).save(tmp_path / "odd" / "cats" / "a.png")
    assert main(args + ["--images-from", str(tmp_path / "odd")]) == 1
    assert "'cats' is not one of the model's classes (left, right, top)" in capsys.readouterr().err
    assert main(args + ["--images-from", str(tmp_path / "nowhere")]) == 1
    assert f"--images-from {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    # an RGB model given Fashion-MNIST: the shapes are named, nothing is sent
    assert main(args + ["--dataset", "fashion-mnist"]) == 1
    assert "has 1x28x28 images" in capsys.readouterr().err
    # resuming a report that sent other images
    import hashlib
    (tmp_path / "r.json").write_text(json.dumps({
        "model": {"sha256": hashlib.sha256(model.read_bytes()).hexdigest()}, "board": {"name": "unix"},
        "images": {"source": "dataset", "dataset": "folder", "first": 0}, "results": []}))
    mine = tmp_path / "ok" / "left"
    mine.mkdir(parents=True)
    shape_image("left", 0, (8, 8)).save(mine / "a.png")
    assert main(harness_args("/dev/null", model, tmp_path / "r.json", 1, "--resume", "--images-from",
                             str(tmp_path / "ok"))) == 1
    assert f"cannot resume: {tmp_path / 'r.json'} sent other images (source dataset, dataset folder)" \
        in capsys.readouterr().err
