"""What the board already holds, and so what the harness copies to it.

A board may run without a writable file system: MicroPython firmware with the device code
frozen into it (scripts/build_firmware.py), the model frozen too (the module `bvitmodel`, its
bytes `bvitmodel.MODEL`) or in a ROMFS image mounted at /rom. Writing there fails (ENODEV: no
file system; EROFS: read-only), and nothing needs writing. So on connecting, the board
answers one survey (`survey`):

- its `bvit` package: frozen (its `__file__` under `.frozen`, or naming no file that exists),
  in a folder (which one), missing, or failing to import;
- its file system: a harmless write and remove of `.bvit-probe` in the target folder (the
  nearest folder that exists above it when it does not exist yet): writable, or the errno;
- its models: for each candidate (the frozen module `bvitmodel`, `/rom/model.bvit`,
  `/rom/<file name>`, the file the harness would copy, `--remote-model`), the size and the
  first 64 bytes, i.e. the file's header, whose CRC-32 covers the rest of the file
  (docs/model-format.md). Same size and same header: the same model, at the cost of reading
  64 bytes; the board's loader checks that CRC against the contents when it loads it.

`plan` turns the survey into what to do: device code frozen (or in place on a file system
that cannot be written) is not copied; a board model identical to `--model` is used where it
is (frozen and ROMFS models in place, with no copy at all); a model that differs, where
nothing can be written, is one error that names both and says how to fix it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from .transport import HarnessError, RawRepl

FROZEN_MODEL = "module:bvitmodel"    # what scripts/build_firmware.py --model freezes
ROMFS = "/rom"
HEADER = 64                          # the model file's header (docs/model-format.md)
PROBE = ".bvit-probe"

# Board code (MicroPython 1.9 and later: no f-strings). Prints one dict literal.
SURVEY = """
def _bvs(root, dirs, models, probe, n):
    import sys, os
    from binascii import hexlify
    if root not in sys.path:
        sys.path.insert(0, root)
    out = {}
    try:
        import bvit
        f = getattr(bvit, '__file__', None)
        out['version'] = getattr(bvit, '__version__', None)
        out['code'] = 'folder'
        if f is None:
            f = (root + '/' if root else '') + 'bvit/__init__.py'
            out['code'] = 'frozen'
            for e in ('py', 'mpy'):
                try:
                    os.stat(f[:-2] + e)
                    out['code'] = 'folder'
                except OSError:
                    pass
        elif f.startswith('.frozen'):
            out['code'] = 'frozen'
        else:
            try:
                os.stat(f)
            except OSError:
                out['code'] = 'frozen'
        out['file'] = f
    except Exception as e:
        out['code'] = 'missing' if isinstance(e, ImportError) else 'broken'
        out['error'] = '%s: %s' % (type(e).__name__, e)
    for k in [k for k in sys.modules if k == 'bvit' or k.startswith('bvit.')]:
        del sys.modules[k]
    out['fs'] = 2
    for d in dirs:
        if d:
            try:
                os.stat(d)
            except OSError as e:
                if e.args[0] == 2:
                    continue
        out['fs_dir'] = d
        p = (d + '/' if d and d[-1] != '/' else d) + probe
        try:
            h = open(p, 'wb')
            h.write(b'bvit')
            h.close()
            os.remove(p)
            out['fs'] = 0
        except OSError as e:
            out['fs'] = e.args[0]
        break
    ms = {}
    for m in models:
        try:
            if m.startswith('module:'):
                b = __import__(m[7:]).MODEL
                ms[m] = [len(b), hexlify(bytes(b[:n])).decode()]
            else:
                h = open(m, 'rb')
                try:
                    b = h.read(n)
                    h.seek(0, 2)
                    ms[m] = [h.tell(), hexlify(b).decode()]
                finally:
                    h.close()
        except Exception:
            ms[m] = None
    out['models'] = ms
    return out
"""

# errno -> why a folder cannot be written, in words
_FS_WORDS = {2: "no such folder (ENOENT)", 5: "I/O error (EIO)", 13: "permission denied (EACCES)",
             19: "no file system (ENODEV)", 28: "no space left (ENOSPC)",
             30: "a read-only file system (EROFS)"}


@dataclass
class Survey:
    """The board's answer: its bvit package, its file system, the models it holds."""
    code: str                  # frozen | folder | missing | broken
    code_file: str | None      # the package's __init__ (as the board names it)
    version: str | None        # bvit.__version__ on the board
    error: str | None          # why `import bvit` failed
    fs_errno: int              # 0: writable
    fs_dir: str | None         # the folder the write was tried in
    models: dict               # spec -> [size, header hex] or None

    @property
    def writable(self) -> bool:
        return self.fs_errno == 0

    @property
    def fs_words(self) -> str:
        """Why nothing can be written, e.g. 'no file system (ENODEV)'."""
        return _FS_WORDS.get(self.fs_errno, f"errno {self.fs_errno}")

    @property
    def code_dir(self) -> str | None:
        """The folder the package was imported from ('' the current one), or None."""
        if self.code != "folder" or not self.code_file:
            return None
        parts = self.code_file.replace("\\", "/").rsplit("/", 2)
        return parts[0] if len(parts) == 3 else ""

    def to_dict(self) -> dict:
        return {"code": self.code, "code_file": self.code_file, "version": self.version,
                "import_error": self.error, "file_system": "writable" if self.writable else self.fs_words,
                "probed_in": self.fs_dir,
                "models": {k: (None if v is None else {"bytes": v[0], "header": v[1]})
                           for k, v in self.models.items()}}


def folders_up(root: str) -> list:
    """The target folder and those above it, nearest first: 'a/b' -> ['a/b', 'a', '']."""
    root = root.rstrip("/") if root not in ("", "/") else root
    out = [root]
    while root not in ("", "/"):
        root = root.rsplit("/", 1)[0] if "/" in root else ""
        if root == "" and out[-1].startswith("/"):
            root = "/"
        out.append(root)
    return out


def candidates(root: str, model_name: str, remote_model: str | None) -> list:
    """The models to look for on the board, preferred first: one given by --remote-model;
    else a frozen one, then ROMFS (both read in place), then the file the harness copies."""
    if remote_model:
        return [remote_model]
    target = f"{root}/{model_name}" if root else model_name
    out = [FROZEN_MODEL, f"{ROMFS}/model.bvit", f"{ROMFS}/{model_name}", target]
    return list(dict.fromkeys(out))


def survey(repl: RawRepl, root: str, models, timeout: float = 30) -> Survey:
    """Ask the board what it holds (one exec; see SURVEY)."""
    models = list(models)
    code = SURVEY + (f"print(repr(_bvs({root!r}, {folders_up(root)!r}, {models!r}, "
                     f"{PROBE!r}, {HEADER})))\ndel _bvs\n")
    text = repl.exec(code, timeout, doing="looking at what the board holds").strip()
    try:
        d = ast.literal_eval(text.splitlines()[-1])
        return Survey(d["code"], d.get("file"), d.get("version"), d.get("error"), d["fs"],
                      d.get("fs_dir"), {m: d["models"][m] for m in models})   # preferred first
    except (ValueError, SyntaxError, IndexError, KeyError, TypeError):
        raise HarnessError(f"unexpected answer while looking at what the board holds: {text[-200:]!r}") from None


def host_version(device_dir: Path) -> str | None:
    """__version__ of the host's device code (device/bvit/__init__.py), None without one."""
    init = Path(device_dir) / "bvit" / "__init__.py"
    m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)", init.read_text(), re.M) if init.is_file() else None
    return m.group(1) if m else None


def crc_of(header_hex: str) -> str:
    """The CRC-32 a model file's header records (bytes 12..15), as 0x........"""
    h = bytes.fromhex(header_hex)
    return f"0x{int.from_bytes(h[12:16], 'little'):08x}" if len(h) >= 16 else "none"


def where(spec: str, more: str = "") -> str:
    """A board model's name with where it lives (and `more`), in words."""
    kind = ("frozen into the firmware" if spec.startswith("module:")
            else "ROMFS" if spec.startswith(ROMFS + "/") else "")
    said = ", ".join(w for w in (kind, more) if w)
    return f"{spec} ({said})" if said else spec


@dataclass
class Plan:
    copy_code: bool            # sync the device code to the target folder
    code_note: str | None      # the progress line when it is not copied
    model: str                 # the model the agent loads (a path, or module:NAME)
    copy_model: bool           # sync --model to `model`
    model_note: str | None     # the progress line when it is used where it is


def plan(s: Survey, *, transfer: str, root: str, model_path: Path, model_bytes: bytes,
         remote_model: str | None, host_ver: str | None, circuitpython: bool = False) -> Plan:
    """What to copy and which model to load, from the survey (module docstring)."""
    # drive/ampy write by other means; CircuitPython's file system is read-only to code only
    # while its drive is mounted, and files.put says what to do then
    writable = s.writable or transfer in ("drive", "ampy") or circuitpython
    version = f"bvit {s.version}" if s.version else "bvit"
    if s.version and host_ver and s.version != host_ver:
        version += f"; the host's device code is {host_ver}"
    # -- the device code
    if transfer == "none":
        copy_code, code_note = False, "device code: not copied (--transfer none)"
    elif s.code == "frozen":
        copy_code, code_note = False, f"device code: frozen into the firmware ({version}): not copied"
    elif writable:
        copy_code, code_note = True, None
    elif s.code == "folder":
        copy_code, code_note = False, (f"device code: {version} in {s.code_dir or 'the current folder'}, "
                                       f"on {s.fs_words}: "
                                       "used as it is, not copied")
    else:
        found = "no bvit package" if s.code == "missing" else f"a bvit package that fails to import ({s.error})"
        raise HarnessError(
            f"the board has {found}, and device/ cannot be copied to it: {s.fs_words}. Build "
            "firmware with the device code frozen (scripts/build_firmware.py, docs/firmware.md), or "
            "give the board a writable file system")
    # -- the model
    size, header = len(model_bytes), model_bytes[:HEADER].hex()
    target = remote_model or (f"{root}/{model_path.name}" if root else model_path.name)
    fixed = _fixed(target)
    # a file the harness can rewrite is checked by its full hash (files.sync), not its header
    same = [k for k, v in s.models.items() if v and v[0] == size and v[1] == header
            and not (writable and k == target and not fixed)]
    in_place = remote_model is None or fixed
    if transfer == "none":
        return Plan(copy_code, code_note, target, False,
                    f"model: {where(target)} on the board, not copied (--transfer none)")
    if same and (in_place or not writable):
        return Plan(copy_code, code_note, same[0], False,
                    f"model: the board's {where(same[0])} is {model_path} (same size and header, "
                    f"CRC-32 {crc_of(header)}): used in place, not copied")
    if writable and not fixed:
        return Plan(copy_code, code_note, target, True, None)
    raise HarnessError(_model_error(s, model_path, size, header, remote_model, writable))


def _fixed(spec: str) -> bool:
    """A model nothing over the REPL rewrites: frozen into the firmware, or in ROMFS."""
    return spec.startswith("module:") or spec.startswith(ROMFS + "/")


def _model_error(s: Survey, model_path, size, header, remote_model, writable) -> str:
    held = [(k, v) for k, v in s.models.items() if v]
    mine = f"--model {model_path} ({size:,} bytes, CRC-32 {crc_of(header)})"
    if held:
        theirs = ", ".join(where(k, f"{v[0]:,} bytes, CRC-32 {crc_of(v[1])}") for k, v in held)
        what = f"the board's model {theirs} is not {mine}"
    else:
        what = f"the board holds no model (looked for {', '.join(s.models)}) to run {mine}"
    if remote_model and remote_model.startswith("module:") and writable:
        why = "a frozen module cannot be replaced over the REPL"
    elif remote_model and remote_model.startswith(ROMFS + "/") and writable:
        why = "ROMFS is read-only (mpremote romfs deploy writes a new image)"
    else:
        why = s.fs_words
    return (f"{what}, and it cannot be copied to the board: {why}. Rebuild the firmware with this "
            f"model (scripts/build_firmware.py --model {model_path}, docs/firmware.md), run with "
            "--model set to the file the board's model was built from, or name the board's copy "
            "of this model with --remote-model NAME (module:NAME for a frozen one)")


__all__ = ["Survey", "Plan", "survey", "plan", "candidates", "folders_up", "host_version",
           "FROZEN_MODEL", "ROMFS"]
