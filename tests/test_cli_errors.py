"""Every user error ends in ONE line naming the file or option, and exit status 2.

- The host command line (`butterflyvit`, through cli.main with the real parsers and files;
  two cases also as a real subprocess of the installed script): a missing or wrong --data,
  impossible numbers, outputs that cannot be written, unreadable or mismatched checkpoints,
  images that are missing, not images, directories or decompression bombs.
- The board script (device/classify.py) on the real MicroPython unix port: wrong options
  exit with status 2 and one `error: ...` line on stdout (a board has no other channel:
  mpremote shows stdout; other failures keep status 1, docs/device.md).
- Images: a 16-bit PNG is scaled to 8 bits (the same frame, and the same prediction, as its
  8-bit version), not clipped; bombs are refused.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from butterflyvit.cli import COMMANDS, main
from butterflyvit.config import ModelConfig
from butterflyvit.images import MAX_PIXELS, ImageError, read_image
from butterflyvit.intmodel import IntModel, image_to_frame
from butterflyvit.modelfile import write_model

from test_intmodel import tiny_arrays, tiny_bytes

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "pico-fmnist.bvit"
FMNIST = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------ files the cases use

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A small PNG declaring width x height 8-bit grayscale pixels (its data is one row)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(bytes(1 + width))) + png_chunk(b"IEND", b""))


def save_checkpoint_of(path, cfg):
    from butterflyvit.checkpoint import build_model, save_checkpoint
    torch.manual_seed(0)
    save_checkpoint(path, {"config": cfg.to_dict(), "model": build_model(cfg).state_dict(),
                           "dataset": "digits"})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{name: path} of everything the cases below refer to as {name}."""
    d = tmp_path_factory.mktemp("cli")
    cfg = ModelConfig.from_dict(tiny_arrays("plain")[1]["config"])  # the tiny model file's
    f = {"dir": d / "folder", "missing": d / "missing"}
    f["dir"].mkdir()
    f["model"] = d / "tiny.bvit"
    f["model"].write_bytes(tiny_bytes("plain"))
    f["ckpt"] = save_checkpoint_of(d / "tiny.pt", cfg)
    f["ckpt_rgb"] = save_checkpoint_of(d / "rgb.pt", replace(cfg, in_channels=3))
    f["ckpt_other"] = save_checkpoint_of(d / "other.pt", replace(cfg, num_experts=8))
    f["text"] = d / "notes.txt"
    f["text"].write_text("not a checkpoint, not an image\n")
    whole = f["ckpt"].read_bytes()
    f["truncated"] = d / "truncated.pt"
    f["truncated"].write_bytes(whole[:len(whole) // 2])
    f["image"] = d / "img.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(f["image"])
    f["short_frame"] = d / "short.gray"
    f["short_frame"].write_bytes(bytes(60))
    f["fm_broken"] = d / "fashion-mnist"  # the IDX files' names, not their contents
    f["fm_broken"].mkdir()
    for stem in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        (f["fm_broken"] / f"{stem}-ubyte.gz").write_bytes(b"not gzip")
    f["bomb"] = d / "bomb.png"
    f["bomb"].write_bytes(bomb_png(100_000, 100_000))  # 10^10 pixels in a few KB
    f["big"] = d / "big.png"
    f["big"].write_bytes(bomb_png(8000, 5000))  # above MAX_PIXELS, below Pillow's own limit
    return f


# (id, arguments, what the error line must name); {name} is a path from `files`.
CASES = [
    # train
    ("train-data-missing", "train --data {missing} --steps 1", "{missing}"),
    ("train-data-a-file", "train --data {text} --steps 1", "{text}: not a folder"),
    ("train-data-broken-files", "train --data {fm_broken} --steps 1",
     "{fm_broken}/train-images-idx3-ubyte.gz: cannot read"),
    ("train-cifar10-no-data", "train --dataset cifar10 --steps 1", "--data"),
    ("train-cifar10-data-missing", "train --dataset cifar10 --data {missing}", "{missing}"),
    ("train-batch-size-0", "train --batch-size 0", "--batch-size"),
    ("train-batch-size-negative", "train --batch-size -8", "--batch-size"),
    ("train-batch-size-not-int", "train --batch-size 8.5", "--batch-size"),
    ("train-batch-size-too-big", "train --dataset digits --preset tiny --steps 1 --batch-size 5000 "
     "--no-progress", "--batch-size"),
    ("train-epochs-0", "train --epochs 0", "--epochs"),
    ("train-epochs-negative", "train --epochs -2", "--epochs"),
    ("train-epochs-nan", "train --epochs nan", "--epochs"),
    ("train-steps-0", "train --steps 0", "--steps"),
    ("train-lr-negative", "train --lr -1", "--lr"),
    ("train-label-smoothing-1", "train --label-smoothing 1", "--label-smoothing"),
    ("train-top-k-above-experts", "train --preset tiny --top-k 9", "top_k"),
    ("train-preset-unknown", "train --preset huge", "--preset"),
    ("train-out-directory", "train --out {dir}", "--out"),
    ("train-log-missing-folder", "train --log {missing}/log.jsonl", "--log"),
    ("train-metrics-missing-folder", "train --metrics-out {missing}/m.json", "--metrics-out"),
    ("train-resume-missing", "train --resume {missing}.pt", "{missing}.pt"),
    # pack
    ("pack-out-missing-folder", "pack {ckpt} -o {missing}/x.bvit", "-o {missing}/x.bvit"),
    ("pack-out-directory", "pack {ckpt} -o {dir}", "-o {dir}"),
    ("pack-checkpoint-missing", "pack {missing}.pt -o {dir}/x.bvit", "{missing}.pt"),
    ("pack-checkpoint-text", "pack {text} -o {dir}/x.bvit", "{text}"),
    ("pack-checkpoint-truncated", "pack {truncated} -o {dir}/x.bvit", "{truncated}"),
    ("pack-checkpoint-directory", "pack {dir} -o {dir}/x.bvit", "{dir}"),
    ("pack-calib-0", "pack {ckpt} -o {dir}/x.bvit --calib 0", "--calib"),
    # eval
    ("eval-checkpoint-text", "eval {model} --dataset digits --checkpoint {text}", "{text}"),
    ("eval-checkpoint-truncated", "eval {model} --dataset digits --checkpoint {truncated}", "{truncated}"),
    ("eval-checkpoint-3-channel", "eval {model} --dataset digits --checkpoint {ckpt_rgb}", "in_channels"),
    ("eval-checkpoint-other-shape", "eval {model} --dataset digits --checkpoint {ckpt_other}",
     "num_experts"),
    ("eval-checkpoint-missing", "eval {model} --dataset digits --checkpoint {missing}.pt", "{missing}.pt"),
    ("eval-model-missing", "eval {missing}.bvit --dataset digits", "{missing}.bvit"),
    ("eval-model-not-a-model", "eval {text} --dataset digits", "{text}"),
    ("eval-data-missing", "eval {model} --data {missing}", "{missing}"),
    ("eval-limit-negative", "eval {model} --dataset digits --limit -1", "--limit"),
    # classify
    ("classify-model-missing", "classify {missing}.bvit {image}", "{missing}.bvit"),
    ("classify-model-directory", "classify {dir} {image}", "{dir}"),
    ("classify-image-missing", "classify {model} {missing}.png", "{missing}.png"),
    ("classify-image-directory", "classify {model} {dir}", "{dir}"),
    ("classify-image-not-an-image", "classify {model} {text}", "{text}"),
    ("classify-image-bomb", "classify {model} {bomb}", "{bomb}"),
    ("classify-image-over-limit", "classify {model} {big}", "{big}"),
    ("classify-frame-wrong-size", "classify {model} {short_frame} --size 8x8", "{short_frame}"),
    ("classify-frame-no-size", "classify {model} {short_frame}", "--size"),
    ("classify-size-zero", "classify {model} {short_frame} --size 0x8", "--size"),
    ("classify-size-not-wxh", "classify {model} {short_frame} --size big", "--size"),
    ("classify-top-k-negative", "classify {model} {image} --top-k -1", "--top-k"),
    ("classify-top-k-0", "classify {model} {image} --top-k 0", "--top-k"),
    # memory, boards, demo, the command itself
    ("memory-sweep-not-int", "memory --sweep 8,x", "--sweep"),
    ("memory-sweep-0", "memory --sweep 0,8", "--sweep"),
    ("memory-experts-0", "memory --experts 0", "--experts"),
    ("memory-top-k-above-experts", "memory --top-k 99", "top_k"),
    ("memory-preset-unknown", "memory --preset huge", "--preset"),
    ("memory-plot-missing-folder", "memory --plot {missing}/m.png", "--plot"),
    ("boards-weight-buffer-negative", "boards --weight-buffer -5", "--weight-buffer"),
    ("boards-model-missing", "boards --model {missing}.bvit", "{missing}.bvit"),
    ("boards-board-unknown", "boards --board nope", "nope"),
    ("demo-images-0", "demo --images 0", "--images"),
    ("demo-train-steps-0", "demo --train-steps 0", "--train-steps"),
    ("no-such-command", "nope", "COMMAND"),
]


def expand(text: str, files) -> str:
    return text.format(**{k: str(v) for k, v in files.items()})


def assert_one_error_line(err: str, args: list, names: str):
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    prog = "butterflyvit" + (f" {args[0]}" if args[0] in COMMANDS else "")
    assert lines[0].startswith(f"{prog}: error: "), err
    assert names in lines[0], (names, err)


@pytest.mark.parametrize("argv, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_error_is_one_line_and_status_2(argv, names, files, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a data cache, if any
    args = expand(argv, files).split()
    root = files["dir"].parent
    before = sorted(root.rglob("*"))
    rc = main(args)
    cap = capsys.readouterr()
    assert rc == 2, (rc, cap.out, cap.err)
    assert_one_error_line(cap.err, args, expand(names, files))
    # nothing written and nothing left behind (no model file, no *.tmp beside -o)
    assert sorted(root.rglob("*")) == before


@pytest.mark.parametrize("argv, names", [("train --epochs 0", "--epochs"),
                                         ("classify {missing}.bvit {image}", "{missing}.bvit")])
def test_installed_script_exits_2(argv, names, files):
    """The console script itself: sys.exit(main()) gives status 2 and one stderr line."""
    exe = Path(sys.executable).parent / "butterflyvit"
    proc = subprocess.run([str(exe), *expand(argv, files).split()], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc.stderr, argv.split(), expand(names, files))


def test_a_closed_pipe_stops_quietly():
    """`butterflyvit boards | head`: the reader is gone before the table is written. The
    script stops with 141 (128 + SIGPIPE, as a shell reports a tool the pipe stopped) and
    no traceback; the same command into an open pipe prints its table and exits 0."""
    exe = str(Path(sys.executable).parent / "butterflyvit")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        closed = subprocess.run([exe, "boards"], stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    finally:
        os.close(write_end)
    assert closed.returncode == 141, closed.stderr
    assert closed.stderr == ""
    opened = subprocess.run([exe, "boards"], capture_output=True, text=True, timeout=120)
    assert opened.returncode == 0 and "esp32s3-eye" in opened.stdout


def test_eval_with_the_matching_checkpoint_runs(files, capsys):
    """The control for the two refusals above: the checkpoint of the packed config runs."""
    rc = main(["eval", str(files["model"]), "--dataset", "digits", "--checkpoint",
               str(files["ckpt"]), "--limit", "5", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["images"] == 5


def test_classify_carries_on_past_a_bad_image(files, capsys):
    """One line per bad image, the good ones still classified, status 2."""
    rc = main(["classify", str(files["model"]), str(files["image"]), str(files["missing"]) + ".png"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out.startswith(str(files["image"]) + ": ")
    assert err.strip() == f"butterflyvit classify: error: {files['missing']}.png: no such file or directory"


# ------------------------------------------------------------------ write_model

def test_write_model_refuses_and_leaves_nothing(tmp_path, monkeypatch):
    arrays, meta = tiny_arrays("plain")
    with pytest.raises(IsADirectoryError):
        write_model(tmp_path, arrays, meta)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        write_model(tmp_path / "no" / "x.bvit", arrays, meta)
    assert os.listdir(tmp_path) == []
    # a failure after the temporary file is written (here: the rename) removes it again
    def refuse(src, dst):
        raise PermissionError(13, "refused", dst)
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_model(tmp_path / "x.bvit", arrays, meta)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    assert write_model(tmp_path / "x.bvit", arrays, meta) == (tmp_path / "x.bvit").stat().st_size
    assert os.listdir(tmp_path) == ["x.bvit"]


# ------------------------------------------------------------------ images

def save_16bit(path, pixels16):
    """A real 16-bit grayscale PNG written by Pillow (mode I;16)."""
    im = Image.fromarray(pixels16.astype(np.uint16))
    assert im.mode == "I;16"
    im.save(path)
    assert Image.open(path).mode in ("I;16", "I")  # read back with 16 bits


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(3)
    p8 = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    Image.fromarray(p8).save(tmp_path / "a8.png")
    # v * 257 is v at 16 bits exactly; the low byte's noise must not change the 8-bit value
    p16 = p8.astype(np.int64) * 257 + rng.integers(-128, 128, p8.shape) * (p8 > 0) * (p8 < 255)
    save_16bit(tmp_path / "a16.png", p16)
    assert (read_image(tmp_path / "a16.png", "L") == p8).all()
    for channels in (1, 3):  # GRAYSCALE and RGB565 frames
        assert image_to_frame(tmp_path / "a16.png", channels=channels) == \
            image_to_frame(tmp_path / "a8.png", channels=channels)
    # what clipping would have given: everything above 255/65535 of full scale white
    assert (np.clip(p16, 0, 255) != p8).mean() > 0.9


@pytest.mark.skipif(not (SHIPPED.exists() and FMNIST.exists()), reason="needs the shipped model "
                    "and Fashion-MNIST")
def test_16bit_boot_is_still_a_boot(tmp_path, capsys):
    """The first Fashion-MNIST test image (an ankle boot) as a 16-bit PNG: the same frame
    and the same logits as its 8-bit PNG through `butterflyvit classify`."""
    from butterflyvit.data import read_idx

    boot = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")[0]
    assert read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")[0] == 9
    Image.fromarray(boot).save(tmp_path / "boot8.png")
    save_16bit(tmp_path / "boot16.png", boot.astype(np.int64) * 257)
    res = []
    for name in ("boot8.png", "boot16.png"):
        assert main(["classify", str(SHIPPED), str(tmp_path / name), "--json"]) == 0
        res.append(json.loads(capsys.readouterr().out))
    assert res[0]["logits"] == res[1]["logits"]
    assert res[1]["top"][0]["class"] == 9, res[1]["top"]
    # what clipping would have given: a white silhouette, other logits (the shipped model
    # may still call it a boot, so the logits are compared, not the class)
    clipped = np.clip(boot.astype(np.int64) * 257, 0, 255).astype(np.uint8)
    assert (clipped != boot).sum() > 100
    r = IntModel.load(SHIPPED).forward_frame(clipped.tobytes(), 28, 28, "GRAYSCALE")
    assert r.logits.tolist() != res[1]["logits"]


@pytest.mark.parametrize("size", [(100_000, 100_000), (8000, 5000), (MAX_PIXELS + 1, 1)])
def test_bomb_is_refused(tmp_path, size):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(*size))
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageError, match=f"^{path}: refused: .*pixels"):
        read_image(path, "L")


def test_image_tree_data_16bit_and_bomb(tmp_path):
    """The image-folder data set reader uses the same reader: 16-bit scaled, bombs refused
    with the member's name."""
    from butterflyvit.data import DataError, load_dataset

    rng = np.random.default_rng(5)
    tree = tmp_path / "tree"
    want = {}
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tree / split / cls).mkdir(parents=True)
            p8 = rng.integers(0, 256, (4, 4), dtype=np.uint8)
            save_16bit(tree / split / cls / "x.png", p8.astype(np.int64) * 257)
            want[split, cls] = p8
    ds = load_dataset("cifar10", tree, cache_dir=tmp_path / "cache")
    assert ds.classes == ["a", "b"]
    for i, cls in enumerate(("a", "b")):
        for c in range(3):
            assert (ds.train.images[i, c].numpy() == want["train", cls]).all()
    (tree / "test" / "b" / "x.png").write_bytes(bomb_png(100_000, 100_000))
    with pytest.raises(DataError, match=r"test/b/x\.png: refused"):
        load_dataset("cifar10", tree, cache_dir=tmp_path / "cache2")


# ------------------------------------------------------------------ the board script

CLASSIFY = REPO / "device" / "classify.py"

# (id, arguments, classify.json or None, what the error line must name)
DEVICE_CASES = [
    ("model-without-value", ["--model"], None, "--model"),
    ("model-followed-by-option", ["--model", "--logits"], None, "--model"),
    ("unknown-option", ["--colour", "red"], None, "--colour"),
    ("top-k-negative", ["--top-k", "-1"], None, "--top-k"),
    ("top-k-not-int", ["--top-k", "three"], None, "--top-k"),
    ("frames-negative", ["--frames", "-1"], None, "--frames"),
    ("weight-buffer-negative", ["--weight-buffer", "-4"], None, "--weight-buffer"),
    ("json-top-k-0", [], {"top_k": 0}, "top_k"),
    ("json-frames-string", [], {"frames": "many"}, "frames"),
    ("esp32-without-camera-module", ["--input", "esp32"], None, "'camera' module"),
    ("openmv-without-sensor-module", ["--input", "openmv"], None, "'sensor' module"),
]


@pytest.mark.parametrize("args, config, names", [c[1:] for c in DEVICE_CASES],
                         ids=[c[0] for c in DEVICE_CASES])
def test_board_option_error(micropython, tmp_path, args, config, names):
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("plain"))
    (tmp_path / "image.gray").write_bytes(bytes(64))
    if config is not None:
        (tmp_path / "classify.json").write_text(json.dumps(config))
    res = micropython.run(CLASSIFY, args=args, heapsize="2m", cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr
    errors = [line for line in res.stdout.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and names in errors[0], res.stdout
    assert res.stderr == ""
    if "module" in names:  # the camera: says what to give instead
        assert "use --input NAME.gray or NAME.rgb565" in errors[0]
    else:  # refused before the model is loaded: nothing else printed
        assert res.stdout.splitlines() == errors


def test_board_good_options_still_run(micropython, tmp_path):
    """The control: the same script, the options right, classifies (status 0)."""
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("plain"))
    (tmp_path / "image.gray").write_bytes(bytes(range(64)))
    res = micropython.run(CLASSIFY, args=["--top-k", "2", "--frames", "0", "--weight-buffer", "0",
                                          "--logits"], heapsize="2m", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "logits: " in res.stdout and "error" not in res.stdout
