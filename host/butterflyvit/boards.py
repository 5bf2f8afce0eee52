"""The boards the product designs for, read from `boards/<name>/profile.json`.

Each profile holds a board's memory (SRAM, heap free to MicroPython, flash, the file system
a stock MicroPython build leaves, PSRAM), clock, power draw (active / idle / sleep, each
with its source and whether it is a datasheet figure, a measurement or an estimate), camera
wiring and serial port (docs/boards.md). This module turns them into `Board` objects and
answers "does this model fit this board, and if not why":

- flash: the model file must fit the board's file system (`fs`) on a stock build;
- RAM: the classifier's buffers (`buffers_bytes`: the board's own formula,
  `bvit.schema.ram_needed`, imported from device/bvit) plus the device code's heap when it
  is imported from .py files (`CODE_HEAP`, an estimate; 0 when the code is frozen into the
  firmware) must fit the heap.

Figures are for design, not measurements of your board: `butterflyvit harness` measures the
heap and time on the board itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

KB = 1024
MB = 1024 * 1024

REPO = Path(__file__).resolve().parents[2]
BOARDS_DIR = Path(os.environ.get("BUTTERFLYVIT_BOARDS", REPO / "boards"))
ORDER = ["rp2040-pico", "esp32-cam", "esp32s3-eye", "esp32c3", "unix"]

# Heap taken by the device package when a board imports it from .py files (bytecode and
# module objects), for a 32-bit port. Estimate: measured 32.9 KB resident after importing
# bvit.model on the 64-bit unix port (pointers and objects are twice as large there), so
# about 17 KB on a 32-bit board, rounded up for the compiler's transient use. Frozen code
# (boards/<name>/manifest.py) costs no heap for code.
CODE_HEAP = 24 * KB


class BoardError(ValueError):
    """An unknown board or a broken profile; the message says which and why."""


@dataclass(frozen=True)
class Board:
    name: str        # short id used on the command line (the folder name)
    title: str
    cpu: str
    sram: int | None   # bytes (None: not a microcontroller)
    heap: int        # bytes free to MicroPython, about
    flash: int | None  # bytes
    fs: int | None     # bytes of file system on a stock MicroPython build, about
    psram: int = 0   # bytes (0: none)
    camera: str = "-"
    kind: str = "mcu"  # "mcu" or "host" (the unix port)
    clock_hz: int | None = None
    aliases: tuple = ()
    profile: dict = field(default_factory=dict, compare=False, repr=False)
    path: Path | None = field(default=None, compare=False, repr=False)

    # ---------------------------------------------------------------- memory

    def fits_flash(self, nbytes: int) -> bool:
        """Does a model file of `nbytes` fit the file system of a stock build?"""
        return self.fs is None or nbytes <= self.fs

    # ---------------------------------------------------------------- power

    def power(self, state: str) -> float | None:
        """Watts drawn in `state` ("active", "idle", "sleep") from the profile, or None."""
        p = self.profile.get("power") or {}
        entry, volts = p.get(state), p.get("supply_v")
        if not entry or volts is None or entry.get("current_a") is None:
            return None
        return float(entry["current_a"]) * float(volts)

    @property
    def active_w(self) -> float | None:
        return self.power("active")

    @property
    def idle_w(self) -> float | None:
        return self.power("idle")

    def power_source(self, state: str) -> dict:
        """{"watts", "current_a", "supply_v", "kind", "source", "measured_at"} for a report."""
        p = self.profile.get("power") or {}
        entry = p.get(state) or {}
        return {"state": state, "watts": self.power(state), "current_a": entry.get("current_a"),
                "supply_v": p.get("supply_v"), "kind": entry.get("kind"),
                "source": entry.get("source") or p.get("note"), "measured_at": p.get("measured_at")}

    @property
    def manifest(self) -> Path | None:
        m = self.path / "manifest.py" if self.path else None
        return m if m and m.exists() else None


def _need(d, key, where):
    if key not in d:
        raise BoardError(f"{where}: missing {key!r}")
    return d[key]


def board_from_profile(profile: dict, path: Path | None = None) -> Board:
    where = str(path / "profile.json") if path else "profile"
    mem = _need(profile, "memory", where)
    for k in ("heap",):
        v = _need(mem, k, where)
        if not isinstance(v, int) or v <= 0:
            raise BoardError(f"{where}: memory.{k} must be a positive number of bytes")
    cam = profile.get("camera")
    cam_text = "-" if not cam else cam.get("sensor", "-").split(" (")[0]
    power = profile.get("power") or {}
    for state in ("active", "idle", "sleep"):
        e = power.get(state)
        if e is not None and (not isinstance(e, dict) or "current_a" not in e or not e.get("source")
                              or e.get("kind") not in ("datasheet", "measurement", "estimate")):
            raise BoardError(f"{where}: power.{state} needs current_a, a source and a kind "
                             "(datasheet, measurement or estimate)")
    return Board(name=_need(profile, "name", where), title=_need(profile, "title", where),
                 cpu=profile.get("cpu", "-"), sram=mem.get("sram"), heap=mem["heap"],
                 flash=mem.get("flash"), fs=mem.get("fs"), psram=mem.get("psram") or 0,
                 camera=cam_text, kind=profile.get("kind", "mcu"), clock_hz=profile.get("clock_hz"),
                 aliases=tuple(profile.get("aliases", ())), profile=profile, path=path)


def load_boards(directory=None) -> dict:
    """name -> Board for every boards/<name>/profile.json (the known order first)."""
    directory = Path(directory) if directory else BOARDS_DIR
    found = {}
    if directory.is_dir():
        for sub in sorted(directory.iterdir()):
            f = sub / "profile.json"
            if f.is_file():
                try:
                    profile = json.loads(f.read_text())
                except ValueError as exc:
                    raise BoardError(f"{f}: not valid JSON: {exc}") from None
                b = board_from_profile(profile, sub)
                if b.name != sub.name:
                    raise BoardError(f"{f}: name {b.name!r} differs from its folder {sub.name!r}")
                found[b.name] = b
    ordered = {n: found[n] for n in ORDER if n in found}
    ordered.update({n: b for n, b in found.items() if n not in ordered})
    return ordered


BOARDS = load_boards()


def get_board(name: str) -> Board:
    """A board by name or alias (case-insensitive); BoardError listing the known ones."""
    key = name.strip().lower()
    for b in BOARDS.values():
        if key == b.name or key in (a.lower() for a in b.aliases):
            return b
    raise BoardError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)} "
                     f"(profiles in {BOARDS_DIR})")


def mcu_boards() -> list:
    return [b for b in BOARDS.values() if b.kind == "mcu"]


def flash_table(nbytes: int) -> list[dict]:
    """Per microcontroller board: does a file of `nbytes` fit its file system, and the share
    it takes (butterflyvit pack's report)."""
    return [{"board": b.name, "title": b.title, "flash": b.flash, "fs": b.fs,
             "fits": b.fits_flash(nbytes), "share_of_fs": nbytes / b.fs}
            for b in mcu_boards()]


# ------------------------------------------------------------------ what a model needs

def device_config(cfg) -> dict:
    """A ModelConfig (or its dict) as the board sees it: bvit.schema.derive (grid, tokens,
    patch_dim added)."""
    from bvit import schema

    return schema.derive(cfg if isinstance(cfg, dict) else cfg.to_dict())


def buffers_bytes(cfg, weight_buffer: int = 4096) -> int:
    """Bytes of the buffers the board's Classifier allocates for a model of config `cfg`
    (a ModelConfig or its dict): the board's own formula, bvit.schema.ram_needed
    (tests/test_boards.py checks it against a real MicroPython)."""
    from bvit import schema

    return int(schema.ram_needed(device_config(cfg), weight_buffer))


def estimated_file_size(cfg, metadata_bytes: int = 4096) -> int:
    """Size of the packed integer model file of config `cfg` (sections, 16-byte alignment,
    header and section table exact; metadata estimated): for presets not packed yet."""
    from .modelfile import ALIGN, ENTRY_SIZE, HEADER_SIZE, trit5_row_bytes
    from .quantize import expected_shapes

    item = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4}
    size = HEADER_SIZE
    shapes = expected_shapes(cfg)
    size += ENTRY_SIZE * len(shapes)
    for dtype, shape in shapes.values():
        if dtype == "trit5":
            n = shape[0] * trit5_row_bytes(shape[1])
        else:
            n = item[dtype]
            for s in shape:
                n *= s
        size = -(-size // ALIGN) * ALIGN + n
    return -(-size // ALIGN) * ALIGN + metadata_bytes


def model_needs(source, *, frozen: bool = False, weight_buffer: int = 4096) -> dict:
    """What a model needs on a board. `source`: a model file path, or (name, ModelConfig)."""
    from .config import ModelConfig

    if isinstance(source, tuple):
        name, cfg = source
        size, exact = estimated_file_size(cfg), False
    else:
        from bvit import schema

        from .modelfile import ModelFormatError, read_model

        m = read_model(source)
        try:                        # the board's rules: a configuration it would refuse
            schema.config(m.metadata)               # is refused here, before any sizing
        except schema.ModelError as exc:
            raise ModelFormatError(str(exc)) from None
        cfg = ModelConfig.from_dict(m.metadata["config"])
        name, size, exact = str(source), os.path.getsize(source), True
    buffers = buffers_bytes(cfg, weight_buffer)
    from bvit import schema
    layers = int(schema.ram_needed(device_config(cfg), weight_buffer, layers=True))
    code = 0 if frozen else CODE_HEAP
    return {"model": name, "config": cfg.to_dict(), "file_size": size, "file_size_exact": exact,
            "buffers": buffers, "code_heap": code, "peak_ram": buffers + code, "frozen": frozen,
            "buffers_whole_layers": layers,
            "weight_buffer": weight_buffer}


def fit(board: Board, needs: dict) -> dict:
    """Does the model fit `board`: flash and RAM, with the reasons when it does not."""
    reasons = []
    fits_flash = board.fits_flash(needs["file_size"])
    if not fits_flash:
        reasons.append(f"model file {needs['file_size'] / KB:,.0f} KB > file system "
                       f"{board.fs / KB:,.0f} KB")
    fits_ram = needs["peak_ram"] <= board.heap
    psram_ram = False
    if not fits_ram:
        why = (f"peak RAM {needs['peak_ram'] / KB:,.1f} KB (buffers {needs['buffers'] / KB:,.1f} KB"
               + (f" + device code {needs['code_heap'] / KB:,.0f} KB" if needs["code_heap"] else "")
               + f") > heap {board.heap / KB:,.0f} KB")
        if board.psram and needs["peak_ram"] <= board.psram // 2:
            psram_ram = True
            why += f"; fits with the PSRAM firmware ({board.psram // MB} MB, slower)"
        elif needs["code_heap"] and needs["buffers"] <= board.heap:
            why += "; fits with the device code frozen into the firmware"
        reasons.append(why)
    return {"board": board.name, "fits_flash": fits_flash, "fits_ram": fits_ram,
            "fits_with_psram": psram_ram, "fits": fits_flash and fits_ram,
            "flash_share": (needs["file_size"] / board.fs) if board.fs else None,
            "ram_share": needs["peak_ram"] / board.heap, "reasons": reasons}


# ------------------------------------------------------------------ frozen model module

def freeze_model(model_path, out_py) -> int:
    """Write a Python module `MODEL = b'...'` holding a model file's bytes, for a freeze
    manifest (BVIT_MODEL_PY): frozen bytes objects stay in flash and the board reads the
    model in place (Classifier(bvitmodel.MODEL)). Returns the model's size."""
    from .modelfile import read_model

    data = Path(model_path).read_bytes()
    read_model(model_path)  # refuse to freeze a broken file
    lines = ["# A butterflyvit model file, frozen as bytes (butterflyvit boards --freeze).",
             f"# source: {Path(model_path).name}, {len(data)} bytes", "MODEL = ("]
    for i in range(0, len(data), 64):
        lines.append(f"    {data[i:i + 64]!r}")
    lines.append(")")
    Path(out_py).write_text("\n".join(lines) + "\n")
    return len(data)
