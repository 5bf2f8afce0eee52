"""butterflyvit boards: the board profiles, which models fit which boards (flash and peak RAM)
and why not; optionally the analytical energy per inference, or a model frozen for firmware."""

from . import positive_int

HELP = "list the board profiles and which models fit which boards (flash, peak RAM), and why not"


def add_arguments(p):
    p.add_argument("--model", metavar="FILE", nargs="+", default=[],
                   help="packed model files (*.bvit) to check (default: models/*.bvit and the presets)")
    p.add_argument("--preset", metavar="NAME", nargs="+", default=None,
                   help="preset configurations to check, file size estimated (default: pico paper "
                        "when no --model is given)")
    p.add_argument("--board", metavar="NAME", nargs="+", default=None,
                   help="boards to show (default: all profiles in boards/)")
    p.add_argument("--frozen", action="store_true",
                   help="the device code is frozen into the firmware (no heap for code)")
    p.add_argument("--weight-buffer", type=positive_int, default=4096, metavar="BYTES",
                   help="the classifier's weight buffer (default 4096, as on the board)")
    p.add_argument("--energy", action="store_true",
                   help="also print the analytical energy per inference against a standard MoE")
    p.add_argument("--freeze", metavar="MODEL",
                   help="write MODEL as a Python module of bytes for a freeze manifest (with --out)")
    p.add_argument("--out", metavar="PY", help="output of --freeze (e.g. build/bvitmodel.py: import bvitmodel)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _check_frozen_name(out, device):
    """The module name (--out's stem) must be importable and must not clash with the frozen
    device code: MicroPython's freezer names a module's C symbols by its path with "/" -> "_",
    so bvit_model.py and bvit/model.py both become frozen_module_bvit_model and the firmware
    does not compile. bvitmodel.py (the documented name) cannot clash."""
    from ..errors import UserError

    name = out.stem
    if out.suffix != ".py" or not name.isidentifier():
        raise UserError(f"--out {out}: the frozen model is imported by its file name, so it must "
                        "be NAME.py with NAME a Python identifier (e.g. build/bvitmodel.py)")
    taken = {"classify": "classify.py", "bvit": "the bvit package"}
    taken.update({"bvit_" + p.stem: f"bvit/{p.name}" for p in (device / "bvit").glob("*.py")})
    if name in taken:
        raise UserError(f"--out {out}: a frozen module named {name} clashes with the frozen device "
                        f"code's {taken[name]} (the same C name in the firmware); use e.g. "
                        "build/bvitmodel.py")


def _kb(n):
    return "-" if n is None else f"{n / 1024:,.0f}K" if n < 10 * 1024 * 1024 else f"{n / 1048576:,.0f}M"


def _mw(w):
    return "-" if w is None else f"{1000 * w:,.0f} mW"


def run(args) -> int:
    import json
    from pathlib import Path

    from .. import boards as B
    from ..errors import UserError

    if args.freeze:
        if not args.out:
            raise UserError("--freeze needs --out PY")
        _check_frozen_name(Path(args.out), B.REPO / "device")
        try:
            n = B.freeze_model(args.freeze, args.out)
        except OSError:
            raise  # names the file
        except ValueError as exc:
            raise UserError(f"--freeze {args.freeze}: {exc}") from None
        print(f"wrote {args.out}: MODEL = {n:,} bytes of {args.freeze} (import {Path(args.out).stem}); "
              f"build with BVIT_MODEL_PY={Path(args.out).resolve()} and FROZEN_MANIFEST=boards/<board>/"
              "manifest.py (scripts/build_firmware.py --model does both)")
        return 0

    try:
        boards = [B.get_board(n) for n in args.board] if args.board else list(B.BOARDS.values())
    except B.BoardError as exc:
        raise UserError(f"--board: {exc}") from None
    if not boards:
        raise UserError(f"no board profiles found in {B.BOARDS_DIR}")

    from ..config import ModelConfig
    from ..presets import preset_config

    sources = list(args.model)
    if not sources and args.preset is None:
        sources = sorted(str(p) for p in (B.REPO / "models").glob("*.bvit"))
    presets = args.preset if args.preset is not None else ([] if args.model else ["pico", "paper"])
    needs = []
    for path in sources:
        try:
            needs.append(B.model_needs(path, frozen=args.frozen, weight_buffer=args.weight_buffer))
        except (ValueError, KeyError) as exc:  # not a model file (a missing one: OSError)
            raise UserError(f"{path}: {exc}") from None
    for name in presets:
        try:
            cfg = preset_config(name)
        except ValueError as exc:
            raise UserError(f"--preset: {exc}") from None
        needs.append(B.model_needs((f"{name} (preset)", cfg), frozen=args.frozen,
                                   weight_buffer=args.weight_buffer))

    result = {"boards": [{"name": b.name, "title": b.title, "kind": b.kind, "cpu": b.cpu,
                          "clock_hz": b.clock_hz, "sram": b.sram, "heap": b.heap, "flash": b.flash,
                          "fs": b.fs, "psram": b.psram, "camera": b.camera,
                          "power": {s: b.power_source(s) for s in ("active", "idle", "sleep")}}
                         for b in boards],
              "models": needs,
              "fit": [[B.fit(b, n) for b in boards] for n in needs],
              "code_heap_assumed": 0 if args.frozen else B.CODE_HEAP}
    if args.energy:
        from .. import energy

        result["energy"] = []
        for n in needs:
            cfg = ModelConfig.from_dict(n["config"])
            per_board = {}
            for b in boards:
                if b.kind == "mcu" and cfg.ffn == "butterfly":
                    per_board[b.name] = energy.compare(cfg, onchip_bytes=b.flash)
            result["energy"].append({"model": n["model"], "by_board": per_board,
                                     "default": energy.compare(cfg) if cfg.ffn == "butterfly" else None})

    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0

    out = ["Boards (profiles in boards/<name>/profile.json; power: see the profile for each source)", ""]
    out.append(f"  {'board':<13}{'clock':>8}{'SRAM':>7}{'heap':>7}{'flash':>7}{'fs':>7}{'PSRAM':>7}"
               f"{'active':>10}{'idle':>9}  camera")
    for b in boards:
        clock = f"{b.clock_hz / 1e6:.0f}MHz" if b.clock_hz else "-"
        kinds = "/".join(sorted({(b.profile.get('power') or {}).get(s, {}).get('kind', '') or ''
                                 for s in ('active', 'idle') if (b.profile.get('power') or {}).get(s)}))
        out.append(f"  {b.name:<13}{clock:>8}{_kb(b.sram):>7}{_kb(b.heap):>7}{_kb(b.flash):>7}"
                   f"{_kb(b.fs):>7}{_kb(b.psram) if b.psram else '-':>7}{_mw(b.active_w):>10}"
                   f"{_mw(b.idle_w):>9}  {b.camera}" + (f"  [power: {kinds}]" if kinds else ""))
    if needs:
        code = "device code frozen (no heap)" if args.frozen else \
            f"+ {B.CODE_HEAP // 1024} KB for the device code imported from .py (estimate; --frozen: 0)"
        out += ["", f"Models (peak RAM = the classifier's buffers {code})", ""]
        out.append(f"  {'model':<40}{'file':>10}{'buffers':>10}{'peak RAM':>10}")
        for n in needs:
            size = f"{'' if n['file_size_exact'] else '~'}{n['file_size'] / 1024:,.0f}K"
            out.append(f"  {n['model'][-40:]:<40}{size:>10}{n['buffers'] / 1024:>9,.1f}K"
                       f"{n['peak_ram'] / 1024:>9,.1f}K")
        out.append("  (buffers: the row-by-row path, weights read from the file; with the native "
                   "module and the model frozen or in ROMFS, the whole-layer path needs "
                   + ", ".join(f"{n['buffers_whole_layers'] / 1024:,.1f}K" for n in needs)
                   + " instead: docs/device.md)")
        out += ["", "Fits (flash: model file in the file system; RAM: peak RAM in the heap)", ""]
        out.append(f"  {'model':<28}" + "".join(f"{b.name:>14}" for b in boards))
        for n, row in zip(needs, result["fit"]):
            cells = []
            for f in row:
                cells.append("yes" if f["fits"] else
                             "PSRAM" if f["fits_flash"] and f["fits_with_psram"] else
                             "no: " + ("flash" if not f["fits_flash"] else "") +
                             ("+" if not f["fits_flash"] and not f["fits_ram"] else "") +
                             ("RAM" if not f["fits_ram"] else ""))
            out.append(f"  {n['model'][-28:]:<28}" + "".join(f"{c:>14}" for c in cells))
        whys = [(n["model"], f["board"], r) for n, row in zip(needs, result["fit"]) for f in row
                for r in f["reasons"]]
        if whys:
            out += ["", "Why not:"]
            out += [f"  {m} on {b}: {r}" for m, b, r in whys]
    if args.energy:
        from .. import energy

        for e in result["energy"]:
            if e["default"] is None:
                continue
            out += ["", f"{e['model']}:"]
            out += ["  " + line for line in energy.format_compare(e["default"]).splitlines()]
            if e["by_board"]:
                out.append("  per board (weights on chip when the whole model fits the board's flash):")
                for name, r in e["by_board"].items():
                    out.append(f"    {name:<13} ButterflyViT {r['butterfly']['energy_pj']['total'] / 1e6:,.2f} uJ,"
                               f" saving {100 * r['saving_vs_moe_fp32']:.1f}% vs fp32 MoE, "
                               f"{100 * r['saving_vs_moe_int8']:.1f}% vs int8 MoE")
    print("\n".join(out))
    return 0
