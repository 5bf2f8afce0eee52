"""`butterflyvit harness` on boards without a writable file system, on a real MicroPython.

The unix MicroPython's own VFS makes the boards: `vfs.umount('/')` leaves it with no file
system at all (ENODEV, as a bare Cortex-M board), `vfs.mount(VfsPosix(DIR), '/rom',
readonly=True)` is a ROMFS image at /rom (code and model read in place), and the same at '/'
is a read-only file system (EROFS). A `bvitmodel` module on the board's path is a model
frozen into firmware (what scripts/build_firmware.py --model makes). The harness must look
before it writes: use the board's code and an identical model where they are, copy nothing,
and stop with one clear error (exit 1) when the board's model is another and nothing can be
written. A writable board with an identical frozen model uses it and copies only the code.
Real frozen firmware (qemu, Cortex-M3): tests/test_harness_frozen.py.
"""

import json
import shutil

import pytest

from beds.micropython import DEVICE_DIR, MicroPythonPty
from butterflyvit.boards import freeze_model
from butterflyvit.cli import main
from butterflyvit.harness import onboard as O
from butterflyvit.harness.protocol import HEAP_PEAK
from butterflyvit.harness.transport import RawRepl
from test_boards import make_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny models (8x8 grey, the digits data set's size), same shape, other weights."""
    d = tmp_path_factory.mktemp("nofs-models")
    return make_model(d / "tiny.bvit", preset="tiny"), make_model(d / "other.bvit", preset="tiny", seed=5)


def args(port, model, report, n=3, *extra):
    return ["harness", "--port", port, "--board", "unix", "--model", str(model), "--images", str(n),
            "--dataset", "digits", "--report", str(report), "--no-progress", *extra]


def start_board(tmp_path, setup="", path=(), heapsize="512k"):
    """The unix MicroPython on a pty, made into the board `setup` describes (run in its REPL
    before the harness connects)."""
    d = tmp_path / "board"
    d.mkdir()
    b = MicroPythonPty(d, heapsize=heapsize, path=path)
    if setup:
        with RawRepl.connect(b.path, timeout=30) as repl:     # a busy machine starts it slowly
            repl.exec(setup, 30)
    return b


def files_under(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_romfs_board_without_file_system(models, tmp_path, capsys):
    """No file system (ENODEV), the code and model in ROMFS at /rom: nothing copied, the
    board's code and /rom/model.bvit used in place, bit-exact; another model: one error."""
    model, other = models
    rom = tmp_path / "rom"
    shutil.copytree(DEVICE_DIR / "bvit", rom / "bvit")
    shutil.copyfile(model, rom / "model.bvit")
    before = files_under(rom)
    b = start_board(tmp_path, f"import vfs, sys\nvfs.mount(vfs.VfsPosix({str(rom)!r}), '/rom', readonly=True)\n"
                              "vfs.umount('/')\nsys.path.insert(0, '/rom')\n")
    try:
        with RawRepl.connect(b.path, timeout=30) as repl:      # the board really has no file system
            assert "19" in repl.exec("try:\n open('x', 'wb')\nexcept OSError as e:\n print(e.args[0])\n")
        report = tmp_path / "rom.json"
        rc = main(args(b.path, model, report))
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "device code: bvit 0.1.0 in /rom, on no file system (ENODEV): used as it is, not copied" in out.err
        crc = O.crc_of(model.read_bytes()[:64].hex())
        assert (f"model: the board's /rom/model.bvit (ROMFS) is {model} (same size and header, CRC-32 "
                f"{crc}): used in place, not copied") in out.err
        assert "copied (" not in out.err
        r = json.loads(report.read_text())
        assert r["summary"]["bit_exact"] == 3 and r["status"] == "complete" and "transfers" not in r
        ob = r["on_board"]
        assert ob["code"] == "folder" and ob["code_file"] == "/rom/bvit/__init__.py"
        assert ob["file_system"] == "no file system (ENODEV)" and ob["probed_in"] == ""
        assert (ob["code_copied"], ob["model_copied"], ob["model_used"]) == (False, False, "/rom/model.bvit")
        assert ob["models"]["module:bvitmodel"] is None and ob["models"]["/rom/model.bvit"]["bytes"] == \
            model.stat().st_size
        assert r["model"]["remote_path"] == "/rom/model.bvit" and r["setup"]["heap_peak"] == HEAP_PEAK
        # another model: it cannot be copied there, so one error naming both, exit 1
        rc = main(args(b.path, other, tmp_path / "other.json"))
        err = capsys.readouterr().err
        assert rc == 1
        first = next(ln for ln in err.splitlines() if ln.startswith("error: "))
        assert first.startswith("error: harness failed while looking at what the board holds: the board's "
                                f"model /rom/model.bvit (ROMFS, {model.stat().st_size:,} bytes, CRC-32 {crc}) "
                                f"is not --model {other} ({other.stat().st_size:,} bytes, CRC-32 "), first
        assert ("and it cannot be copied to the board: no file system (ENODEV). Rebuild the firmware "
                f"with this model (scripts/build_firmware.py --model {other}, docs/firmware.md)") in first
        assert "--remote-model NAME (module:NAME for a frozen one)" in first
        failed = json.loads((tmp_path / "other.json").read_text())
        assert failed["status"] == "failed" and failed["error"]["stage"] == "looking at what the board holds"
        # the explicit options name the board's model and copy nothing, whatever it holds
        rc = main(args(b.path, model, tmp_path / "named.json", 2, "--transfer", "none",
                       "--remote-model", "/rom/model.bvit"))
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "device code: not copied (--transfer none)" in out.err
        assert "model: /rom/model.bvit (ROMFS) on the board, not copied (--transfer none)" in out.err
        assert files_under(rom) == before           # nothing written
    finally:
        b.close()


def test_read_only_board_with_frozen_model_module(models, tmp_path, capsys):
    """A read-only file system (EROFS) holding the code, the model a `bvitmodel` module: the
    module is used in place; another model is the same clear error; nothing is written."""
    model, other = models
    ro = tmp_path / "ro"
    shutil.copytree(DEVICE_DIR / "bvit", ro / "bvit")
    freeze_model(model, ro / "bvitmodel.py")
    before = files_under(ro)
    b = start_board(tmp_path, f"import vfs, os\nvfs.umount('/')\n"
                              f"vfs.mount(vfs.VfsPosix({str(ro)!r}), '/', readonly=True)\nos.chdir('/')\n")
    try:
        report = tmp_path / "ro.json"
        rc = main(args(b.path, model, report))
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert ("device code: bvit 0.1.0 in the current folder, on a read-only file system (EROFS): "
                "used as it is, not copied") in out.err
        assert "model: the board's module:bvitmodel (frozen into the firmware) is " in out.err
        r = json.loads(report.read_text())
        assert r["summary"]["bit_exact"] == 3 and r["on_board"]["model_used"] == "module:bvitmodel"
        assert r["on_board"]["file_system"] == "a read-only file system (EROFS)"
        rc = main(args(b.path, other, tmp_path / "other.json"))
        err = capsys.readouterr().err
        assert rc == 1
        assert ("the board's model module:bvitmodel (frozen into the firmware, "
                f"{model.stat().st_size:,} bytes, CRC-32 {O.crc_of(model.read_bytes()[:64].hex())}) "
                f"is not --model {other}") in err
        assert "cannot be copied to the board: a read-only file system (EROFS). Rebuild the firmware" in err
        assert files_under(ro) == before            # no probe file, no copy left behind
    finally:
        b.close()


def test_writable_board_uses_an_identical_frozen_model(models, tmp_path, capsys):
    """A writable board with a `bvitmodel` module: the same model is used in place (only the
    code copied); another model is copied as usual; --remote-model module:bvitmodel with
    another model cannot be, and says so."""
    model, other = models
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    freeze_model(model, frozen / "bvitmodel.py")
    b = start_board(tmp_path, path=(frozen,))
    try:
        rc = main(args(b.path, model, tmp_path / "same.json"))
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "model: the board's module:bvitmodel (frozen into the firmware) is " in out.err
        assert "device code: " in out.err and "file(s) copied" in out.err
        r = json.loads((tmp_path / "same.json").read_text())
        assert r["on_board"]["file_system"] == "writable" and r["on_board"]["code_copied"] is True
        assert {f["path"] for f in r["transfers"][0]["files"]} == {f"bvit/{p.name}" for p in
                                                                 (DEVICE_DIR / "bvit").glob("*.py")} | {"classify.py"}
        assert not (b.workdir / model.name).exists() and (b.workdir / "bvit" / "agent.py").is_file()
        assert not (b.workdir / O.PROBE).exists()
        rc = main(args(b.path, other, tmp_path / "other.json"))
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "device code and model: 1 file(s) copied" in out.err
        assert (b.workdir / other.name).read_bytes() == other.read_bytes()
        rc = main(args(b.path, other, tmp_path / "named.json", 3, "--remote-model", "module:bvitmodel"))
        err = capsys.readouterr().err
        assert rc == 1 and "is not --model" in err and "a frozen module cannot be replaced over the REPL" in err
    finally:
        b.close()


def test_bare_board_without_code_says_what_to_build(models, tmp_path, capsys):
    """No file system and no bvit package: nothing to run and nowhere to copy it; one error."""
    b = start_board(tmp_path, "import vfs\nvfs.umount('/')\n")
    try:
        rc = main(args(b.path, models[0], tmp_path / "bare.json"))
        err = capsys.readouterr().err
        assert rc == 1
        assert ("error: harness failed while looking at what the board holds: the board has no bvit "
                "package, and device/ cannot be copied to it: no file system (ENODEV). Build firmware "
                "with the device code frozen (scripts/build_firmware.py, docs/firmware.md)") in err
    finally:
        b.close()


def test_survey_helpers():
    """The folders the write probe tries, the candidates, and a header's CRC."""
    assert O.folders_up("") == [""] and O.folders_up("/") == ["/"]
    assert O.folders_up("a/b") == ["a/b", "a", ""]
    assert O.folders_up("/flash/x/") == ["/flash/x", "/flash", "/"]
    assert O.candidates("", "m.bvit", None) == ["module:bvitmodel", "/rom/model.bvit", "/rom/m.bvit", "m.bvit"]
    assert O.candidates("/flash", "model.bvit", None)[-2:] == ["/rom/model.bvit", "/flash/model.bvit"]
    assert O.candidates("", "m.bvit", "module:x") == ["module:x"]
    header = bytes(12) + (0xCBF43926).to_bytes(4, "little") + bytes(48)
    assert O.crc_of(header.hex()) == "0xcbf43926"
