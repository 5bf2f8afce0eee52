"""butterflyvit demo: the main job, end to end on this machine.

load the shipped checkpoint (or train one) -> pack it (or take a packed model file as it
is, --model) -> classify test images of the model's data set (Fashion-MNIST as 28x28 grey
frames; CIFAR-10 as 32x32 RGB565 frames, a colour camera's format) with the host integer
reference and with the board agent (device/bvit/agent.py, the code the serial harness
drives on a board) on the real MicroPython unix port under a board-sized heap -> compare
the integer logits.
"""

from typing import NamedTuple

from . import positive_int

HELP = "train or load a model, pack it, classify images on the MicroPython unix port, compare with the host"

DEFAULT_CHECKPOINT = "models/pico-fmnist.pt"


def add_arguments(p):
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, metavar="CKPT",
                        help=f"float checkpoint to pack (default {DEFAULT_CHECKPOINT}, the shipped one)")
    source.add_argument("--train-steps", type=positive_int, metavar="N",
                        help="train a fresh pico model for N steps on Fashion-MNIST instead of loading one")
    source.add_argument("--model", metavar="FILE",
                        help="a packed model file (*.bvit) to classify with as it is: no checkpoint, "
                             "no packing (e.g. models/cifar10-pico.bvit)")
    p.add_argument("--images", type=positive_int, default=8, metavar="N",
                   help="test images to classify, spread evenly over the test set (default 8)")
    p.add_argument("--data", metavar="PATH",
                   help="where the model's data set is, for its test images and for packing's "
                        "calibration (default: where it was when the model was made; CIFAR-10: "
                        "the pickle directory, its archive, or an image tree or its .tar.gz)")
    p.add_argument("--heapsize", metavar="SIZE",
                   help="MicroPython heap, like a board's (default: 96k, the ESP32-CAM class, for "
                        "a grey model; the ESP32-S3-EYE's 150k for a colour one, the board its "
                        "camera is for)")
    p.add_argument("--backend", default="auto", choices=["auto", "viper", "python"],
                   help="device kernels (default auto: viper where it exists)")
    p.add_argument("--out", default="out/demo", metavar="DIR", help="work folder (default out/demo)")


def _micropython():
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "micropython"
    if not exe.exists():
        raise SystemExit(f"butterflyvit demo: {exe} is missing: run scripts/setup.sh")
    return str(exe)


def _install_board(exe, device_dir, board_dir):
    """The device code as a small board holds it: bvit/ precompiled with mpy-cross for this
    MicroPython (compiling .py on import would need more heap than a board has), classify.py."""
    import shutil
    import subprocess

    from ..harness.files import compile_mpy, device_files

    mpy = int(subprocess.run([exe, "-c", "import sys; print(sys.implementation._mpy)"],
                             capture_output=True, text=True, check=True).stdout)
    (board_dir / "bvit").mkdir(parents=True, exist_ok=True)
    for local, remote in compile_mpy(device_files(device_dir), mpy, board_dir / "bvit"):
        if (board_dir / remote).resolve() != local.resolve():
            shutil.copyfile(local, board_dir / remote)


def _run_board(exe, heapsize, board_dir, model, frames, backend):
    """The board agent (bvit.agent, precompiled) on the unix port: the model loaded once,
    then each frame (path, "WxH"); returns a result dict per frame (logits, us, heap_peak)."""
    import os
    import subprocess

    from ..harness.protocol import job, read_jobs, write_jobs

    jobs = write_jobs(board_dir / "jobs.json", [job(model, frames, backend=backend, collect=True)])
    env = dict(os.environ, MICROPYPATH=f"{board_dir}{os.pathsep}.frozen")
    cmd = [exe, "-X", f"heapsize={heapsize}", "-m", "bvit.agent", str(jobs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    done = read_jobs(proc.stdout)
    if proc.returncode != 0 or len(done) != 1 or len(done[0]["results"]) != len(frames):
        raise RuntimeError("the board agent failed on MicroPython:\n" + proc.stdout + proc.stderr)
    return done[0]["results"]


DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "digits": "digits",
                 "folder": "image-folder"}


class TestFrame(NamedTuple):
    index: int      # in the test set
    path: object    # the raw frame file the board reads
    size: str       # "WxH"
    pixels: bytes
    fmt: str        # GRAYSCALE or RGB565
    label: int


def _board_heap(cfg):
    """The default --heapsize: a small board's for a grey model; a colour model's board is
    the ESP32-S3-EYE (its profile's heap)."""
    from ..boards import get_board

    return "96k" if cfg.in_channels == 1 else f"{get_board('esp32s3-eye').heap // 1024}k"


def _test_frames(model_file, net, data, n, folder):
    """(data set name, [TestFrame]): n test images spread evenly over the test set of the
    model's own data set (the harness's rule: the one its file was calibrated on, read from
    --data or where it was then), written to `folder` as the raw frames a camera gives the
    board (grey model: .gray; colour model: big-endian .rgb565)."""
    from ..errors import UserError
    from ..harness.images import frame_for, load_dataset_images
    from ..harness.transport import HarnessError
    from .eval import spread_indices

    try:
        test = load_dataset_images(model_file, net.meta, net.cfg, data=data)
    except HarnessError as exc:
        raise UserError(str(exc)) from None
    if n > len(test):
        raise UserError(f"--images {n}: the test set has {len(test)} images")
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in spread_indices(len(test), n).tolist():
        pixels, w, h, fmt = frame_for(test.pixels[i])
        path = folder / f"test{i:05d}.{'gray' if fmt == 'GRAYSCALE' else 'rgb565'}"
        path.write_bytes(pixels)
        frames.append(TestFrame(i, path, f"{w}x{h}", pixels, fmt, test.labels[i]))
    return test.source["dataset"], frames


def _packed_model(args, out, step, cli):
    """Train (--train-steps) or take --checkpoint, pack it into out/model.bvit: (its path, 0),
    or (None, the exit status) when a step failed (it printed why). A shipped checkpoint,
    models/NAME.pt, must pack to the shipped models/NAME.bvit: the demo says whether it does."""
    import filecmp
    from pathlib import Path

    from ..errors import UserError

    checkpoint = Path(args.checkpoint)
    if args.train_steps:
        step(f"train: pico ButterflyViT on Fashion-MNIST, {args.train_steps} steps")
        checkpoint = out / "trained.pt"
        rc = cli(["train", "--preset", "pico", "--dataset", "fashion-mnist",
                  "--steps", str(args.train_steps), "--out", str(checkpoint)])
        if rc:
            return None, rc
    elif not checkpoint.exists():
        raise UserError(f"--checkpoint {checkpoint}: no such file (use --train-steps N to train "
                        "one, or --model FILE.bvit for a packed model)")

    model_file = out / "model.bvit"
    step(f"pack: {checkpoint} -> {model_file}")
    rc = cli(["pack", str(checkpoint), "-o", str(model_file)]
             + (["--data", args.data] if args.data else []))
    if rc:
        return None, rc
    # A shipped pair, models/NAME.pt and models/NAME.bvit, in whichever checkout it is
    shipped = checkpoint.resolve().with_suffix(".bvit")
    if not args.train_steps and shipped.parent.name == "models" and shipped.exists():
        same = filecmp.cmp(model_file, shipped, shallow=False)
        print(f"packed file {'is byte-identical to' if same else 'DIFFERS from'} the shipped "
              f"models/{shipped.name}")
    return model_file, 0


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from ..cli import main as cli
    from ..errors import UserError
    from ..intmodel import IntModel
    from ..modelfile import ModelFormatError

    repo = Path(__file__).resolve().parents[3]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def step(msg):
        print(f"\n== {msg}", flush=True)

    if args.model:
        model_file = Path(args.model)
        if not model_file.is_file():
            raise UserError(f"--model {model_file}: no such file")
    else:
        model_file, rc = _packed_model(args, out, step, cli)
        if rc:
            return rc
    try:
        net = IntModel.load(model_file)
    except ModelFormatError as exc:
        raise UserError(f"{model_file}: {exc}") from None
    dataset_name, frames = _test_frames(model_file, net, args.data, args.images, out / "frames")
    heapsize = args.heapsize or _board_heap(net.cfg)
    step(f"classify {args.images} {DATASET_NAMES.get(dataset_name, dataset_name)} test images "
         f"({frames[0].size} {frames[0].fmt} frames): host reference vs MicroPython unix port "
         f"(heap {heapsize}, {args.backend} kernels)")
    exe = _micropython()
    board_dir = out / "board"
    _install_board(exe, repo / "device", board_dir)
    board = _run_board(exe, heapsize, board_dir, model_file,
                       [(f.path, f.size) for f in frames], args.backend)
    classes = net.classes
    exact, board_right, host_right = 0, 0, 0
    print(f"{'#':>5}  {'label':<12} {'host':<12} {'board':<12} {'logits':<10} {'ms':>6}  heap peak")
    side = net.cfg.image_size
    for f, r in zip(frames, board):
        host_logits = [int(v) for v in net.forward_frame(f.pixels, side, side, f.fmt).logits]
        same = host_logits == r["logits"]
        exact += same
        host_top, board_top = int(np.argmax(host_logits)), int(np.argmax(r["logits"]))
        host_right += host_top == f.label
        board_right += board_top == f.label
        print(f"{f.index:>5}  {classes[f.label]:<12} {classes[host_top]:<12} "
              f"{classes[board_top]:<12} {'identical' if same else 'DIFFER':<10} "
              f"{r['us'] / 1000:>6.0f}  {r['heap_peak'] / 1024:.1f} KB", flush=True)

    step("result")
    n = args.images
    print(f"integer logits identical on {exact}/{n} images; top-1 correct: host {host_right}/{n}, "
          f"board {board_right}/{n}")
    return 0 if exact == n else 1
