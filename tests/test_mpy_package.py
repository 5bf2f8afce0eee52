"""`butterflyvit mpy`: the board package precompiled for a CPU, installed with `mpremote mip`
as the command prints it, on the real unix MicroPython behind a pty (a board to mpremote)
with a 96 KB heap: an earlier install of the sources is removed, only .mpy files remain, and
classify.py gives the host's logits. Without the removal the sources shadow the .mpy files
and a 96 KB heap cannot compile them; the out-of-memory advice then says to precompile.
"""

import json
import re
import shutil

import pytest

from beds.micropython import REPO, MicroPythonPty
from butterflyvit.cli import main as cli
from butterflyvit.intmodel import IntModel
from test_device_model import FMNIST, parse_report

DEVICE = REPO / "device"
SHIPPED = REPO / "models" / "pico-fmnist.bvit"
# mpy-cross's architecture numbers (the .mpy header's byte 2 >> 2, for native code)
ARCH_CODE = {"armv6m": 4, "armv7emsp": 7, "xtensawin": 10, "rv32imc": 11, "x64": 2}


def modules():
    """The .py modules device/package.json installs."""
    return sorted(remote for remote, _ in json.loads((DEVICE / "package.json").read_text())["urls"]
                  if remote.endswith(".py"))


def build(tmp_path, capsys, arch, target="/lib"):
    capsys.readouterr()
    out = tmp_path / f"mpy-{arch}"
    assert cli(["mpy", "--arch", arch, "-o", str(out), "--target", target]) == 0
    return out, capsys.readouterr().out


@pytest.mark.parametrize("arch", sorted(ARCH_CODE))
def test_mpy_writes_only_mpy_files_and_their_package_json(tmp_path, capsys, arch):
    out, printed = build(tmp_path, capsys, arch)
    manifest = json.loads((out / "package.json").read_text())
    want = [m[:-3] + ".mpy" for m in modules()]
    assert sorted(dest for dest, _ in manifest["urls"]) == want
    assert all(dest == src for dest, src in manifest["urls"])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(want + ["package.json"])
    assert manifest["arch"] == arch and re.search(r"mpy v6\.\d", manifest["mpy_cross"])
    for name in want:
        head = (out / name).read_bytes()[:4]
        assert head[:2] == b"M\x06", name                          # .mpy version 6
    # the viper kernels are machine code for this CPU
    assert (out / "bvit" / "kviper.mpy").read_bytes()[2] >> 2 == ARCH_CODE[arch]
    assert f"  mpremote rm -r :/lib/bvit\n  mpremote mip install --target /lib {out}/package.json\n" in printed


def test_mpy_errors(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert cli(["mpy", "--arch", "x64", "-o", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"butterflyvit mpy: error: -o {tmp_path / 'afile'}: not a folder"
    assert cli(["mpy", "--arch", "pdp11", "-o", str(tmp_path / "x")]) == 2
    assert "argument --arch: invalid choice: 'pdp11'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def printed_commands(printed: str) -> list:
    """The mpremote commands the command printed, as argument lists (without `mpremote`)."""
    return [line.split()[1:] for line in printed.splitlines() if line.startswith("  mpremote ")]


def test_mip_install_of_the_mpy_package_then_classify_in_96k(tmp_path, capsys):
    from butterflyvit.data import read_idx

    image = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")[0]
    board_fs = tmp_path / "board"
    board_fs.mkdir()
    shutil.copy(SHIPPED, board_fs / "model.bvit")
    (board_fs / "image.gray").write_bytes(image.tobytes())
    (board_fs / "classify.json").write_text(json.dumps({"weight_buffer": 2048, "logits": True}))
    out, printed = build(tmp_path, capsys, "x64", target="lib")
    rm, install = printed_commands(printed)
    assert rm == ["rm", "-r", ":lib/bvit"] and install == ["mip", "install", "--target", "lib",
                                                           str(out / "package.json")]
    board = MicroPythonPty(board_fs, heapsize="96k", path=[board_fs / "lib"])
    try:
        # an earlier install of the sources (the plain package.json)
        r = board.mpremote("mip", "install", "--target", "lib", str(DEVICE / "package.json"), timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        # the .mpy package on top of it, without the removal: the sources shadow it
        r = board.mpremote(*install, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        names = {p.name for p in (board_fs / "lib" / "bvit").iterdir()}
        assert {"app.py", "app.mpy"} <= names
        res = board.mpremote("run", str(DEVICE / "classify.py"), timeout=120)
        assert "error: out of memory" in res.stdout, res.stdout + res.stderr
        assert ("Try a smaller model (fewer tokens, smaller dim / ffn_dim), or the bvit package "
                "precompiled (butterflyvit mpy) or frozen into the firmware.") in res.stdout
        assert '"weight_buffer": 2048' not in res.stdout               # already so
        # as printed: remove, install
        for cmd in (rm, install):
            r = board.mpremote(*cmd, timeout=120)
            assert r.returncode == 0, cmd + [r.stdout, r.stderr]
    finally:
        board.close()
    installed = sorted(f"bvit/{p.name}" for p in (board_fs / "lib" / "bvit").iterdir())
    assert installed == [m[:-3] + ".mpy" for m in modules()]
    # the board reset (mpremote run does a soft reset; the bed's unix MicroPython starts anew)
    board = MicroPythonPty(board_fs, heapsize="96k", path=[board_fs / "lib"])
    try:
        res = board.mpremote("run", str(DEVICE / "classify.py"), timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        rep = parse_report(res.stdout)
        ref = IntModel.load(SHIPPED).forward_pixels(image[None])
        assert rep["logits"] == [int(v) for v in ref.logits]
        assert rep["heap_kb"] < 96 and rep["kernels"] in ("viper", "native")
    finally:
        board.close()


@pytest.mark.parametrize("weight_buffer,advice", [
    (4096, 'Try a smaller model (fewer tokens, smaller dim / ffn_dim), or "weight_buffer": 2048, or '
           "the bvit package frozen into the firmware (its code then stays in flash)."),
    (2048, "Try a smaller model (fewer tokens, smaller dim / ffn_dim), or the bvit package frozen "
           "into the firmware (its code then stays in flash)."),
])
def test_memory_advice_leaves_out_what_is_already_so(micropython, tmp_path, capsys, weight_buffer, advice):
    """Out of memory with the package precompiled: no advice to precompile it, and no
    "weight_buffer": 2048 when that is the setting already."""
    out, _ = build(tmp_path, capsys, "x64")
    shutil.copy(SHIPPED, tmp_path / "model.bvit")
    (tmp_path / "image.gray").write_bytes(bytes(784))
    shutil.copy(DEVICE / "classify.py", tmp_path / "classify.py")
    res = micropython.run(tmp_path / "classify.py", heapsize="72k", cwd=tmp_path,
                          args=["--weight-buffer", str(weight_buffer)], extra_path=[out])
    assert res.returncode == 1 and "error: out of memory while loading the model" in res.stdout, res.stdout
    assert res.stdout.splitlines()[-1] == advice
