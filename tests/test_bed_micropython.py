"""The MicroPython test beds work: a real unix port, heap limits, device/ on the path, a pty."""

import serial


VIPER_SCRIPT = """
import micropython

@micropython.viper
def dot(a, b, n: int) -> int:
    pa = ptr8(a)
    pb = ptr8(b)
    s = 0
    for i in range(n):
        s += pa[i] * pb[i]
    return s

a = bytearray(range(1, 101))
b = bytearray(range(101, 201))
print(dot(a, b, 100))
"""


def test_viper_function_runs_on_real_micropython(micropython):
    result = micropython.run(code=VIPER_SCRIPT).check()
    expected = sum(x * y for x, y in zip(range(1, 101), range(101, 201)))
    assert result.stdout.split() == [str(expected)]


def test_it_is_micropython_not_cpython(micropython):
    result = micropython.run(code="import sys; print(sys.implementation.name)").check()
    assert result.stdout.strip() == "micropython"


def test_heapsize_limits_allocation(micropython):
    code = "b = bytearray(200 * 1024)\nprint(len(b))"
    small = micropython.run(code=code, heapsize="96k")
    assert small.returncode != 0 and "MemoryError" in small.stdout + small.stderr
    big = micropython.run(code=code, heapsize="1m").check()
    assert big.stdout.strip() == str(200 * 1024)


def test_device_package_is_importable(micropython):
    result = micropython.run(code="import bvit; print(bvit.__version__)").check()
    assert result.stdout.strip() == "0.1.0"


def test_mpremote_resume_exec_over_pty(micropython_pty):
    result = micropython_pty.mpremote("exec", "import sys; print(sys.implementation.name, 6 * 7)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["micropython", "42"]
    # `resume` keeps the same process: state survives between mpremote calls.
    micropython_pty.mpremote("exec", "x = 1234").check()
    assert micropython_pty.mpremote("exec", "print(x + 1)").check().stdout.strip() == "1235"


def test_mpremote_copies_a_file_and_the_board_reads_it(micropython_pty, tmp_path):
    local = tmp_path / "payload.bin"
    local.write_bytes(bytes(range(256)) * 4)
    micropython_pty.mpremote("fs", "cp", local, ":copied.bin").check()
    result = micropython_pty.mpremote(
        "exec", "d = open('copied.bin', 'rb').read(); print(len(d), sum(d))").check()
    assert result.stdout.split() == ["1024", str(4 * sum(range(256)))]


def test_pyserial_talks_to_the_repl(micropython_pty):
    with serial.Serial(micropython_pty.path, 115200, timeout=5) as port:
        port.write(b"\r\x03\x03")  # interrupt anything, get a fresh prompt
        port.write(b"print(sum(range(1000)))\r")
        seen = b""
        while b"499500" not in seen:
            chunk = port.read(64)
            assert chunk, f"no answer from the REPL; got {seen!r}"
            seen += chunk


def test_killed_board_is_noticed(micropython_pty):
    micropython_pty.kill_board()
    assert not micropython_pty.alive
    result = micropython_pty.mpremote("exec", "print(1)", timeout=30)
    assert result.returncode != 0
