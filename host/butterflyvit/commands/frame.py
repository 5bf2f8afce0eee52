"""butterflyvit frame: image files -> the board's raw camera frames, and back.

A board reads a frame file (`"input": "NAME_WxH.gray"` in classify.json, or the harness)
as a camera would deliver it: GRAYSCALE (one byte a pixel) or RGB565 (two bytes a pixel,
big-endian). This command writes such files from PNG/JPEG/... images, named NAME_WxH.gray or
NAME_WxH.rgb565 so the board knows their size, and turns frame files back into PNG to
check what a board (or a camera capture saved on the board) holds.
"""

import sys
from pathlib import Path

from ..errors import UserError

HELP = "convert images to the board's raw frame files (GRAYSCALE / RGB565), and frames back to PNG"

FORMAT_EXT = {"GRAYSCALE": ".gray", "RGB565": ".rgb565"}


def add_arguments(p):
    p.add_argument("inputs", nargs="+", metavar="FILE",
                   help="images (PNG, JPEG, BMP, ...) to turn into frames, or frame files "
                        "(*.gray, *.rgb565) to turn into PNG")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder to write into (made if missing)")
    p.add_argument("--model", metavar="MODEL",
                   help="take the format (RGB565 for a 3-channel model, else GRAYSCALE) and the "
                        "size (the model's input, square) from this model file")
    p.add_argument("--format", choices=sorted(FORMAT_EXT), type=str.upper,
                   help="frame format (default GRAYSCALE, or the model's)")
    p.add_argument("--size", metavar="WxH",
                   help="frame size: the image is centre-cropped to this aspect ratio and resized "
                        "(Lanczos). Default: the model's input size with --model, else the image's "
                        "own size. For frame files: their size, when the name does not hold it")


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{option} {text!r}: expected WIDTHxHEIGHT, e.g. 96x96") from None
    if not (1 <= w <= 4096 and 1 <= h <= 4096):
        raise UserError(f"{option} {text!r}: width and height must be 1..4096")
    return w, h


def size_from_name(path: Path):
    """(w, h) from a name like cam_160x120.rgb565, by the board's own rule, or None."""
    from bvit.frames import size_from_name as board_rule

    size = board_rule(path.as_posix())
    return tuple(int(v) for v in size.split("x")) if size else None


def image_to_frame_file(path: Path, out: Path, fmt: str, size) -> Path:
    from ..images import fit, read_image
    from ..intmodel import rgb_to_rgb565

    pixels = read_image(path, "L" if fmt == "GRAYSCALE" else "RGB")
    if size is not None:
        pixels = fit(pixels, size)
    h, w = pixels.shape[:2]
    data = pixels.tobytes() if fmt == "GRAYSCALE" else rgb_to_rgb565(pixels)
    target = out / f"{path.stem}_{w}x{h}{FORMAT_EXT[fmt]}"
    target.write_bytes(data)
    return target


def frame_file_to_png(path: Path, out: Path, size) -> Path:
    from PIL import Image

    from ..intmodel import FRAME_EXT
    from ..intops import decode_frame

    size = size_from_name(path) or size
    if size is None:
        raise UserError(f"{path}: give --size WxH, or name the file NAME_WxH{path.suffix}")
    w, h = size
    try:
        pixels = decode_frame(path.read_bytes(), w, h, FRAME_EXT[path.suffix.lower()])
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    target = out / f"{path.stem}.png"
    Image.fromarray(pixels).save(target)
    return target


def run(args) -> int:
    from ..intmodel import FRAME_EXT

    fmt, size = args.format, parse_size(args.size) if args.size else None
    if args.model:
        from ..modelfile import read_model

        cfg = read_model(args.model).metadata["config"]
        model_fmt = "RGB565" if cfg["in_channels"] == 3 else "GRAYSCALE"
        if fmt and fmt != model_fmt:
            raise UserError(f"--format {fmt}: the model {args.model} takes {model_fmt} frames")
        fmt = model_fmt
        size = size or (cfg["image_size"], cfg["image_size"])
    fmt = fmt or "GRAYSCALE"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in args.inputs:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        if path.suffix.lower() in FRAME_EXT:
            target = frame_file_to_png(path, out, size)
        else:
            target = image_to_frame_file(path, out, fmt, size)
        print(f"{path} -> {target}", file=sys.stdout)
    return 0
