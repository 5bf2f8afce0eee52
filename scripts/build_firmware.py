#!/usr/bin/env python3
"""Build MicroPython firmware with butterflyvit in it: the `bvitnative` C module (native/), the
device code frozen (device/bvit, device/classify.py) and, optionally, a model frozen as bytes.

    scripts/build_firmware.py --micropython ~/micropython --port unix
    scripts/build_firmware.py --micropython ~/micropython --board rp2040-pico --model M.bvit

MicroPython's source is not part of this repository: point --micropython (or MICROPYTHON_DIR)
at a checkout, with its submodules for the port (`make -C ports/PORT submodules`), ESP-IDF
exported for esp32 (`. $IDF_PATH/export.sh`). Arguments after `--` go to the port's make
(e.g. `-- MICROPY_PY_BTREE=0`). docs/firmware.md has the details and what was verified.
Uses only the standard library, but --model needs the butterflyvit package (to check the file).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NATIVE = REPO / "native"
PINNED = "1.28.0"  # the MicroPython release these builds were verified with (docs/firmware.md)

# Our board name -> (port, the port's BOARD, its BOARD_VARIANT).  unix has variants instead of
# boards (VARIANT, default standard); qemu has no board profile, only a manifest.
BOARDS = {
    "unix": ("unix", None, None),
    "qemu": ("qemu", "MPS2_AN385", None),
    "qemu-m0plus": ("qemu", "MPS2_AN385", None),
    "rp2040-pico": ("rp2", "RPI_PICO", None),
    "esp32-cam": ("esp32", "ESP32_GENERIC", "SPIRAM"),
    "esp32s3-eye": ("esp32", "ESP32_GENERIC_S3", "SPIRAM_OCT"),
    "esp32c3": ("esp32", "ESP32_GENERIC_C3", None),
}
PORTS = {"unix": "unix", "qemu": "qemu", "rp2": "rp2040-pico", "esp32": "esp32-cam"}  # default boards
# What each port's build leaves in its build folder (the first is the one to flash / run).
ARTIFACTS = {"unix": ["micropython"], "qemu": ["firmware.elf"],
             "rp2": ["firmware.uf2", "firmware.elf"], "esp32": ["firmware.bin", "micropython.uf2"]}
# Boards that are a port's board built another way.  qemu-m0plus: the emulated Cortex-M3
# running ARMv6-M code only (what a Cortex-M0+ such as the RP2040 executes: the same
# instructions, so the same counts under -icount), for measuring a Pico's path without one.
BOARD_MAKE_ARGS = {
    "qemu-m0plus": ["CFLAGS_EXTRA=-mcpu=cortex-m0plus", "MPY_CROSS_FLAGS=-march=armv6m",
                    "SRC_BOARD_O=shared/runtime/gchelper_native.o shared/runtime/gchelper_thumb1.o"],
}
MODEL_MODULE = "bvitmodel"  # not bvit_model: frozen C names flatten bvit/model.py to the same


class BuildError(Exception):
    """A problem the user can fix: printed as one `build_firmware: error: ...` line."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="build_firmware.py", description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- are passed to the port's make, e.g. -- MICROPY_PY_BTREE=0.")
    p.add_argument("--micropython", metavar="DIR", default=os.environ.get("MICROPYTHON_DIR"),
                   help="a MicroPython checkout (default: $MICROPYTHON_DIR)")
    p.add_argument("--port", choices=sorted(PORTS), help="the MicroPython port (default: the board's)")
    p.add_argument("--board", metavar="NAME",
                   help=f"our board name: {', '.join(BOARDS)} (default: the port's first)")
    p.add_argument("--variant", metavar="NAME",
                   help="unix: VARIANT (default standard); esp32: BOARD_VARIANT (default: the "
                        "board's, '' for none)")
    p.add_argument("--model", metavar="FILE.bvit", help=f"a model to freeze (import {MODEL_MODULE})")
    p.add_argument("--user-module", metavar="PATH", action="append", default=[],
                   help="another user C module: a folder with micropython.mk (unix, qemu) or a "
                        "micropython.cmake file (rp2, esp32), e.g. a camera driver; repeatable")
    p.add_argument("--out", metavar="DIR", default="build/firmware",
                   help="build folder and where the firmware is copied (default build/firmware)")
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, metavar="N")
    p.add_argument("--dry-run", action="store_true", help="check and print the commands only")
    return parse_with_make_args(p, argv)


def parse_with_make_args(parser, argv):
    """parser's arguments, with those after `--` (for the port's make) as args.make_args."""
    argv = list(argv)
    i = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:i])
    args.make_args = argv[i + 1:]
    return args


def resolve_target(args):
    """(port, board name, BOARD, variant) from --port / --board / --variant."""
    if args.board is None:
        args.board = PORTS[args.port or "unix"]
    if args.board not in BOARDS:
        raise BuildError(f"--board: unknown board {args.board!r}; known: {', '.join(BOARDS)}")
    port, mp_board, variant = BOARDS[args.board]
    if args.port and args.port != port:
        raise BuildError(f"--board {args.board} is built with --port {port}, not {args.port}")
    if args.variant is not None:
        variant = args.variant or None
    elif port == "unix":
        variant = "standard"
    return port, args.board, mp_board, variant


def micropython_version(top: Path) -> str:
    text = (top / "py" / "mpconfig.h").read_text()
    parts = [re.search(rf"#define MICROPY_VERSION_{k} \(?(\d+)", text) for k in ("MAJOR", "MINOR", "MICRO")]
    return ".".join(m.group(1) for m in parts) if all(parts) else "unknown"


def check_checkout(path, port) -> Path:
    if not path:
        raise BuildError("no MicroPython checkout: pass --micropython DIR or set MICROPYTHON_DIR "
                         f"(git clone https://github.com/micropython/micropython; git checkout v{PINNED})")
    top = Path(path).expanduser().resolve()
    if not (top / "py" / "mkrules.mk").is_file() or not (top / "mpy-cross").is_dir():
        raise BuildError(f"--micropython {path}: not a MicroPython checkout (no py/mkrules.mk)")
    if not (top / "ports" / port).is_dir():
        raise BuildError(f"--micropython {path}: has no ports/{port}")
    return top


def _setting(make_args, name):
    for a in make_args:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def check_prerequisites(top, port, mp_board, variant, make_args):
    """The submodules and toolchains the build needs, each missing one named with its fix."""
    def empty(sub):  # as after a plain clone (or a submodule init that fetched nothing)
        d = top / sub
        return not d.is_dir() or all(p.name == ".git" for p in d.iterdir())

    if port == "esp32":  # first: its `make submodules` needs ESP-IDF too
        idf = os.environ.get("IDF_PATH")
        if not idf or not Path(idf, "tools", "idf.py").is_file():
            raise BuildError("ESP-IDF not found: the esp32 port needs IDF_PATH set to an ESP-IDF "
                             "checkout (the version ports/esp32/README.md names) and "
                             "`. $IDF_PATH/export.sh` run in this shell")
        if not shutil.which("idf.py"):
            raise BuildError(f"idf.py not on PATH: run `. {idf}/export.sh` first")
    fetch = f"make -C {top}/ports/{port}" + (f" BOARD={mp_board}" if mp_board else "") + " submodules"
    needed = []  # (submodule, what switches it off)
    if port in ("unix", "rp2", "esp32"):  # the port's manifest requires micropython-lib packages
        needed.append(("lib/micropython-lib", None))
    if port == "unix" and variant == "standard":
        needed += [("lib/berkeley-db-1.xx", "MICROPY_PY_BTREE=0"), ("lib/mbedtls", "MICROPY_PY_SSL=0")]
    if port == "rp2":  # MicroPython uses its own tinyusb, not pico-sdk's
        needed += [("lib/pico-sdk", None), ("lib/tinyusb", None), ("lib/mbedtls", None)]
    if port == "esp32":
        needed.append(("lib/berkeley-db-1.xx", None))
    for sub, off in needed:
        if off and _setting(make_args, off.split("=")[0]) == off.split("=")[1]:
            continue
        if empty(sub):
            hint = f" (or build without it: -- {off})" if off else ""
            raise BuildError(f"{top / sub} is empty: the {port} port needs that submodule; run "
                             f"`{fetch}` (needs network){hint}")
    tools = {"unix": ["make", "cc"], "qemu": ["make", "arm-none-eabi-gcc"],
             "rp2": ["make", "cmake", "arm-none-eabi-gcc"], "esp32": ["make", "cmake"]}[port]
    for tool in tools:
        if not shutil.which(tool):
            raise BuildError(f"{tool} not found on PATH: the {port} port needs it")


def user_modules(port, out: Path, extra):
    """USER_C_MODULES for the build.  make ports include */micropython.mk one folder below it
    (every release to v1.28.0; later ones also accept the module folder itself): a folder of
    links, one per module.  CMake ports include one .cmake file: one that includes each."""
    for m in extra:
        if not Path(m).exists():
            raise BuildError(f"--user-module {m}: no such file or folder")
    if port in ("unix", "qemu"):
        mods = out / "usermods"
        if mods.exists():
            shutil.rmtree(mods)
        mods.mkdir(parents=True)
        (mods / "bvitnative").symlink_to(NATIVE)
        for m in extra:
            m = Path(m).resolve()
            if not (m / "micropython.mk").is_file():
                raise BuildError(f"--user-module {m}: a make-based port needs a folder with micropython.mk")
            (mods / m.name).symlink_to(m)
        return mods
    cmake = out / "usermods.cmake"
    lines = ["# written by scripts/build_firmware.py: the user C modules of this build",
             f"include({NATIVE / 'micropython.cmake'})"]
    for m in extra:
        m = Path(m).resolve()
        if m.suffix != ".cmake":
            raise BuildError(f"--user-module {m}: a CMake-based port needs a .cmake file")
        lines.append(f"include({m})")
    out.mkdir(parents=True, exist_ok=True)
    cmake.write_text("\n".join(lines) + "\n")
    return cmake


def freeze_model(model, out: Path) -> Path:
    try:
        sys.path.insert(0, str(REPO / "host"))
        from butterflyvit.boards import freeze_model as freeze
    except ImportError as exc:
        raise BuildError(f"--model needs the butterflyvit package ({exc}): run this script with "
                         ".venv/bin/python (scripts/setup.sh)") from None
    if not Path(model).is_file():
        raise BuildError(f"--model {model}: no such file")
    py = out / f"{MODEL_MODULE}.py"
    out.mkdir(parents=True, exist_ok=True)
    try:
        freeze(model, py)
    except ValueError as exc:
        raise BuildError(f"--model {model}: {exc}") from None
    return py


def make_command(top, port, mp_board, variant, build, usermods, manifest, args):
    cmd = ["make", "-C", str(top / "ports" / port), f"-j{args.jobs}", f"BUILD={build}",
           f"USER_C_MODULES={usermods}", f"FROZEN_MANIFEST={manifest}"]
    if port == "unix":
        # device/bvit/kviper.py has viper code: mpy-cross must know the host's architecture
        cmd += [f"VARIANT={variant}", "MPY_CROSS_FLAGS=-march=host"]
    else:
        cmd.append(f"BOARD={mp_board}")
        if variant:
            cmd.append(f"BOARD_VARIANT={variant}")
    return cmd + BOARD_MAKE_ARGS.get(args.board, []) + list(args.make_args)


def run(cmd, env, log):
    print("+ " + " ".join(cmd), flush=True)
    with open(log, "a") as f:
        f.write("+ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = Path(log).read_text().splitlines()[-15:]
        raise BuildError(f"`{' '.join(cmd[:3])} ...` failed (status {proc.returncode}); the last "
                         f"lines of {log}:\n    " + "\n    ".join(tail))


def build(argv) -> Path:
    args = parse_args(argv)
    port, board, mp_board, variant = resolve_target(args)
    top = check_checkout(args.micropython, port)
    version = micropython_version(top)
    check_prerequisites(top, port, mp_board, variant, args.make_args)
    manifest = REPO / "boards" / board / "manifest.py"
    out = Path(args.out).resolve()
    name = variant if port == "unix" else "-".join(filter(None, (mp_board, variant)))
    if board in BOARD_MAKE_ARGS:
        name += "-" + board
    build_dir = out / f"build-{port}-{name}"
    usermods = user_modules(port, out, args.user_module)
    env = dict(os.environ)
    env.pop("BVIT_MODEL_PY", None)  # the manifests freeze a model only when this build says so
    if args.model:
        env["BVIT_MODEL_PY"] = str(freeze_model(args.model, out))
    print(f"MicroPython {version} at {top}" + ("" if version == PINNED else
          f" (verified with {PINNED}; other versions may need changes)"))
    cmds = [["make", "-C", str(top / "mpy-cross"), f"-j{args.jobs}"],
            make_command(top, port, mp_board, variant, build_dir, usermods, manifest, args)]
    if args.dry_run:
        for c in cmds:
            print(("BVIT_MODEL_PY=" + env["BVIT_MODEL_PY"] + " " if "BVIT_MODEL_PY" in env else "")
                  + " ".join(c))
        return build_dir
    log = out / "build.log"
    log.write_text("")
    t0 = time.monotonic()
    for c in cmds:
        run(c, env, log)
    made = [build_dir / a for a in ARTIFACTS[port] if (build_dir / a).is_file()]
    if not made:
        raise BuildError(f"the build finished but left no {ARTIFACTS[port][0]} in {build_dir}")
    for f in made:
        shutil.copy2(f, out / f.name)
    print(f"built in {time.monotonic() - t0:.0f} s: {', '.join(str(out / f.name) for f in made)}"
          + (f" (model frozen as module {MODEL_MODULE})" if args.model else ""))
    return out / made[0].name


def main(argv=None) -> int:
    try:
        build(sys.argv[1:] if argv is None else argv)
    except BuildError as exc:
        print(f"build_firmware: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
