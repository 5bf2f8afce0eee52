"""The harness's serial protocol layer against real peers: MicroPython 1.9 on an emulated
micro:bit (slow, 9 KB heap, no raw-paste), the unix MicroPython behind a socat pty (raw-paste,
files), and a CircuitPython-style REPL (a small simulation: 'Press any key', read-only file
system) for that flavour's differences."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beds.micropython import MicroPythonPty
from butterflyvit.harness import files as F
from butterflyvit.harness.protocol import job, parse_ready, parse_result, read_jobs, write_jobs
from butterflyvit.harness.run import HarnessOptions, memory_advice
from butterflyvit.harness.transport import (BoardDisconnected, BoardException, BoardTimeout,
                                            HarnessError, RawRepl, SerialTransport)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ micro:bit (QEMU)

def test_microbit_exec_errors_timeout_and_death(microbit):
    repl = RawRepl.connect(microbit.pty, timeout=20)
    try:
        assert repl.exec("print(6 * 7)") == "42\n"
        assert repl.use_raw_paste is False          # 2017 firmware: fell back to chunked raw REPL
        info = repl.info()
        assert info["implementation"] == "micropython" and info["version"] == "1.9.2"
        assert info["platform"] == "microbit" and info["freq_hz"] == 16_000_000
        assert 5000 < info["heap_total"] < 20000
        # code longer than the UART buffer, sent in chunks
        assert repl.exec("s = " + repr("ab" * 300) + "\nprint(len(s))\ndel s\n") == "600\n"
        with pytest.raises(BoardException, match="ZeroDivisionError") as e:
            repl.exec("x = 1\n1 / 0\n")
        assert "line 2" in e.value.traceback
        assert repl.exec("print(x)") == "1\n"       # the REPL's globals survive an exception
        with pytest.raises(BoardTimeout, match="silent for 0.5 s while running code"):
            repl.exec("import time\ntime.sleep(3)\n", timeout=0.5)
        assert repl.exec("print('after the timeout')") == "after the timeout\n"
        microbit.stop()                             # the board dies
        with pytest.raises(BoardDisconnected, match="disconnected while"):
            repl.exec("print(1)", timeout=5)
    finally:
        repl.close()


def test_microbit_no_answer_is_a_clean_error(tmp_path):
    """A pty where nobody answers: the raw REPL never comes, and the error says so."""
    import pty as ptymod

    master, slave = ptymod.openpty()
    try:
        with pytest.raises(BoardTimeout, match="no raw REPL on .* within 1 s"):
            RawRepl.connect(os.ttyname(slave), timeout=1)
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(HarnessError, match="cannot open serial port /nonexistent/tty"):
        RawRepl.connect("/nonexistent/tty")


def test_port_vanishing_in_any_call_is_a_disconnect():
    """A pty whose far end closes: write, flush (pyserial raises termios.error from tcdrain,
    not an OSError) and read all say 'disconnected', never a traceback."""
    import pty as ptymod

    for call in ("flush", "write", "read"):
        master, slave = ptymod.openpty()
        link = SerialTransport(os.ttyname(slave))
        try:
            os.close(master)
            with pytest.raises(BoardDisconnected, match="disconnected while testing"):
                if call == "flush":
                    link.write(b"", "testing")        # nothing to write: only the drain runs
                elif call == "write":
                    link.write(b"x" * 4096, "testing")
                else:
                    link.read_exactly(1, 5, "testing")
        finally:
            link.close()
            os.close(slave)


# ------------------------------------------------------------------ unix MicroPython (pty)

@pytest.fixture
def unix_board(tmp_path):
    """The unix MicroPython behind socat, without device/ on its path (files must be copied)."""
    board = MicroPythonPty(tmp_path, heapsize="512k", path=())
    yield board
    board.close()


def test_unix_raw_paste_timeout_and_kill(unix_board):
    repl = RawRepl.connect(unix_board.path)
    try:
        assert repl.exec("print('hi')") == "hi\n" and repl.use_raw_paste
        big = "x = " + repr("z" * 200_000) + "\nprint(len(x))\n"     # flow-controlled windows
        assert repl.exec(big, timeout=20) == "200000\n"
        seen = []
        out = repl.exec("for i in range(3):\n print(i)\n", on_output=seen.append)
        assert out == "0\n1\n2\n" and b"".join(seen).replace(b"\r", b"") == b"0\n1\n2\n"
        with pytest.raises(BoardTimeout):
            repl.exec("import time\ntime.sleep(1)\n", timeout=0.3)
        assert repl.exec("print(len(x))") == "200000\n"              # interrupted, state kept
        assert repl.info()["mpy"] is not None
        unix_board.kill_board()
        with pytest.raises(BoardDisconnected, match=f"on {unix_board.path} disconnected"):
            repl.exec("print(1)", timeout=5)
    finally:
        repl.close()


def test_unix_files_sync_by_hash(unix_board, tmp_path):
    src = tmp_path / "src"
    (src / "bvit").mkdir(parents=True)
    (src / "bvit" / "__init__.py").write_text("V = 1\n")
    (src / "bvit" / "a.py").write_text("def f():\n    return 41 + 1\n")
    model = os.urandom(10_000)
    repl = RawRepl.connect(unix_board.path)
    try:
        want = F.device_files(src, "dev") + [(model, "dev/m.bvit")]
        assert [r for _, r in want] == ["dev/bvit/__init__.py", "dev/bvit/a.py", "dev/m.bvit"]
        assert F.remote_hashes(repl, ["dev/m.bvit"]) == {"dev/m.bvit": None}
        seen = []
        first = F.sync(repl, want, chunk=1024, progress=lambda *a: seen.append(a))
        assert [a["action"] for a in first] == ["copied"] * 3
        total = sum(len(Path(p).read_bytes()) if not isinstance(p, bytes) else len(p) for p, _ in want)
        assert seen[-1] == ("dev/m.bvit", total, total)
        assert (unix_board.workdir / "dev/m.bvit").read_bytes() == model
        assert F.remote_hashes(repl, ["dev/m.bvit"])["dev/m.bvit"] == F.local_hash(model, "sha256")
        again = F.sync(repl, want)
        assert [a["action"] for a in again] == ["same"] * 3
        (src / "bvit" / "a.py").write_text("def f():\n    return 43\n")
        third = F.sync(repl, F.device_files(src, "dev"))
        assert [a["action"] for a in third] == ["same", "copied"]
        assert repl.exec("import sys\nsys.path.insert(0, 'dev')\nfrom bvit.a import f\nprint(f())") == "43\n"
        with pytest.raises(HarnessError, match="no device code"):
            F.device_files(tmp_path / "empty")
    finally:
        repl.close()


def test_hash_kinds_compare_only_real_hashes():
    data = b"abc"
    assert F.same(F.local_hash(data, "sha256"), data) and F.same(F.local_hash(data, "crc32"), data)
    assert not F.same("size:3", data) and not F.same(None, data)
    assert not F.same(F.local_hash(b"abd", "crc32"), data)


# ------------------------------------------------------------------ the result line, heap advice

def test_result_line_checksum_board_and_host_agree(micropython):
    """The result line the board agent makes on the real MicroPython (bvit.agent.result_line
    with binascii.crc32, and with the package's crc32_py for ports without it) checks on the
    host; any one digit changed on the wire fails it (a re-request, not a mismatch); a line
    with a right checksum but the wrong image is an error, not a retry."""
    payload = "7 81234 95000 60000 -12 34 0 -56 2147483647 -2147483648 1 -2 3 40"
    code = (f"p = {payload!r}\nfrom binascii import crc32\nfrom bvit.modelfile import crc32_py\n"
            "from bvit.agent import result_line\n"
            "print(result_line(p, crc32))\nprint(result_line(p, crc32_py))\n")
    fast, slow = micropython.run(code=code, heapsize="512k").check().stdout.splitlines()
    assert fast == slow
    r, why = parse_result(f"noise\n{fast}\n", 7, 10)
    assert why is None and r == {"us": 81234, "heap_peak": 95000, "heap_before": 60000,
                                 "logits": [-12, 34, 0, -56, 2147483647, -2147483648, 1, -2, 3, 40]}
    digits = [n for n, c in enumerate(fast) if c.isdigit()]
    assert len(digits) > 50
    for n in digits:
        bad = fast[:n] + str((int(fast[n]) + 1) % 10) + fast[n + 1:]
        r, why = parse_result(bad, 7, 10)
        assert r is None and why.startswith("checksum mismatch"), bad
    assert parse_result(fast[:-3], 7, 10) == (None, f"checksum mismatch in {fast[:-3]!r}")   # cut short
    assert parse_result("", 7, 10) == (None, "no result line")
    with pytest.raises(HarnessError, match="answered for image 7 with 10 logits, image 8 with 10 expected"):
        parse_result(fast, 8, 10)


def test_agent_job_file_lines_are_read_and_checked(micropython, tmp_path):
    """The board agent run over a job file (as the demo, benchmarks and device tests run it):
    its BVIT-READY and result lines read back as setup and per-frame results with the host's
    logits; a damaged line, or a result before any BVIT-READY, is an error, never a result."""
    from test_intmodel import tiny_bytes, tiny_frames, tiny_model

    (tmp_path / "m.bvit").write_bytes(tiny_bytes("smooth"))
    frames = []
    for i, (fmt, w, h, buf) in enumerate(tiny_frames()):
        path = tmp_path / (f"f{i}_{w}x{h}" + (".gray" if fmt == "GRAYSCALE" else ".rgb565"))
        path.write_bytes(buf)
        frames.append(str(path))
    jobs = write_jobs(tmp_path / "jobs.json", [job(tmp_path / "m.bvit", frames, backend="python"),
                                               job(tmp_path / "m.bvit", frames[:1], in_ram=True)])
    out = micropython.run(REPO / "device" / "bvit" / "agent.py", args=[jobs], heapsize="1m").check().stdout
    first, second = read_jobs(out)
    ref = [[int(v) for v in tiny_model("smooth").forward_frame(buf, w, h, fmt).logits]
           for fmt, w, h, buf in tiny_frames()]
    assert [r["index"] for r in first["results"]] == list(range(len(frames)))
    assert [r["logits"] for r in first["results"]] == ref
    assert [r["logits"] for r in second["results"]] == ref[:1]
    setup = first["setup"]
    assert setup["backend"] == "python" and second["setup"]["backend"] in ("viper", "native")
    assert setup["timer"] == "time.ticks_us" and "load_retried" not in setup
    assert 0 < setup["ram_buffers"] < setup["heap_after_load"] < setup["heap_total"]
    assert all(r["heap_before"] <= r["heap_peak"] for r in first["results"])
    lines = out.splitlines()
    n = next(n for n, line in enumerate(lines) if line.startswith("BVIT "))
    damaged = lines[n][:-12] + ("1" if lines[n][-12] != "1" else "2") + lines[n][-11:]   # in a logit
    with pytest.raises(HarnessError, match="checksum mismatch"):
        read_jobs("\n".join(lines[:n] + [damaged] + lines[n + 1:]))
    with pytest.raises(HarnessError, match="a result line before BVIT-READY"):
        read_jobs(lines[n])
    assert parse_ready("BVIT-RETRY\n" + lines[0])["load_retried"] is True


def test_memory_advice_names_the_reset_command():
    from butterflyvit.boards import get_board

    o = HarnessOptions(port="/dev/ttyACM0", board="rp2040-pico", model="m.bvit", mpy=True)
    again = "MemoryError: ...; again after freeing and collecting the heap"
    text = memory_advice(o, get_board("rp2040-pico"), again)
    assert text.startswith("the board ran out of heap (also after freeing and collecting it): reset the "
                           "board (mpremote connect /dev/ttyACM0 reset, or press its reset button) and "
                           "run the same command again with --resume")
    assert text.endswith("try --weight-buffer 2048 or firmware with the package frozen "
                         "(boards/<name>/manifest.py)")
    o.mpy = False           # compiling on the board is the first suspect; the reset comes second
    text = memory_advice(o, get_board("rp2040-pico"), "MemoryError: allocating 944 bytes")
    assert text.startswith("the board ran out of heap: try --mpy (the package precompiled")
    assert "On a board used since its last reset, reset the board (mpremote connect /dev/ttyACM0" in text

# ------------------------------------------------------------------ CircuitPython-style REPL

FAKE_CIRCUITPYTHON = r'''
"""A CircuitPython-like REPL on a pty: code.py 'done running' banner, 'Press any key',
raw REPL without raw-paste (answers R\x00), CircuitPython identity, and a file system that
is read-only to code (the CIRCUITPY drive is mounted over USB). Code runs in CPython."""
import builtins, contextlib, io, os, sys, traceback, types

out = sys.stdout.buffer

def w(b):
    out.write(b); out.flush()

fake_gc = types.SimpleNamespace(collect=lambda: None, mem_free=lambda: 150000, mem_alloc=lambda: 20000)
sys.modules["gc"] = fake_gc
sys.modules["microcontroller"] = types.SimpleNamespace(cpu=types.SimpleNamespace(frequency=125000000))
real_open = builtins.open
def ro_open(path, mode="r", *a, **k):
    if any(c in mode for c in "wax+"):
        raise OSError(30, "Read-only filesystem")
    return real_open(path, mode, *a, **k)
ns = {"__name__": "__main__", "open": ro_open}
sys.implementation = types.SimpleNamespace(name="circuitpython", version=(9, 2, 1), _mpy=None)
BANNER = b"\r\nAdafruit CircuitPython 9.2.1 on 2024-11-20; Raspberry Pi Pico with rp2040\r\n>>> "
state, buf = "running", b""
while True:
    c = os.read(0, 1)
    if not c:
        break
    if state == "running":
        if c == b"\x03":
            w(b"\r\nCode done running.\r\n\r\nPress any key to enter the REPL. Use CTRL-D to reload.\r\n")
            state = "anykey"
    elif state == "anykey":
        w(BANNER); state = "friendly"
    elif state == "friendly":
        if c == b"\x01":
            w(b"\r\nraw REPL; CTRL-B to exit\r\n>"); state, buf = "raw", b""
        elif c == b"\x03":
            w(b"\r\nKeyboardInterrupt\r\n>>> ")
    elif state == "raw":
        if c == b"\x05" and not buf:
            os.read(0, 2)                      # "A\x01"
            w(b"R\x00")
        elif c == b"\x01":
            w(b"\r\nraw REPL; CTRL-B to exit\r\n>"); buf = b""
        elif c == b"\x02":
            w(BANNER); state = "friendly"
        elif c == b"\x03":
            buf = b""
        elif c == b"\x04":
            if not buf:
                w(b"soft reboot\r\n"); state = "running"; continue
            w(b"OK")
            so, err = io.StringIO(), b""
            try:
                with contextlib.redirect_stdout(so):
                    exec(buf.decode(), ns)
            except BaseException as e:
                err = ("Traceback (most recent call last):\r\n  File \"<stdin>\", line 1, in <module>\r\n"
                       + type(e).__name__ + ": " + str(e) + "\r\n").encode()
            w(so.getvalue().replace("\n", "\r\n").encode() + b"\x04" + err + b"\x04>")
            buf = b""
        else:
            buf += c
'''


@pytest.fixture
def circuitpython_like(tmp_path):
    drive = tmp_path / "CIRCUITPY"
    drive.mkdir()
    script = tmp_path / "fake_cp.py"
    script.write_text(FAKE_CIRCUITPYTHON)
    link = tmp_path / "ttyCP"
    proc = subprocess.Popen(["socat", f"PTY,link={link},raw,echo=0",
                             f"EXEC:{sys.executable} -u {script},pty,raw,echo=0,stderr,setsid,ctty"],
                            cwd=drive, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not link.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "socat did not start"
        time.sleep(0.02)
    time.sleep(0.3)
    yield str(link), drive
    os.killpg(proc.pid, 9)
    proc.wait(10)


def test_circuitpython_flavour(circuitpython_like, tmp_path):
    port, drive = circuitpython_like
    repl = RawRepl.connect(port, timeout=10)       # answers "Press any key" itself
    try:
        info = repl.info()
        assert info["implementation"] == "circuitpython" and info["version"] == "9.2.1"
        assert info["freq_hz"] == 125_000_000 and info["heap_total"] == 170000
        assert repl.exec("print(1 + 1)") == "2\n" and repl.use_raw_paste is False
        files = [(b"print('hello from the drive')\n", "bvit/hello.py"), (os.urandom(3000), "m.bvit")]
        with pytest.raises(HarnessError, match="read-only to code .* pass --drive PATH"):
            F.sync(repl, files)
        copied = F.copy_to_drive(files, drive)
        assert [a["action"] for a in copied] == ["copied", "copied"]
        assert [a["action"] for a in F.copy_to_drive(files, drive)] == ["same", "same"]
        hashes = F.remote_hashes(repl, [r for _, r in files])   # the board sees the drive's files
        assert all(F.same(hashes[r], d) for d, r in files)
        with pytest.raises(HarnessError, match="not a mounted folder"):
            F.copy_to_drive(files, tmp_path / "nope")
    finally:
        repl.close()
