"""butterflyvit demo: the main job, end to end on this machine.

load the shipped checkpoint (or train one) -> pack it -> classify Fashion-MNIST test
images with the host integer reference and with device/classify.py on the real
MicroPython unix port under a board-sized heap -> compare the integer logits.
"""

from . import positive_int

HELP = "train or load a model, pack it, classify images on the MicroPython unix port, compare with the host"

DEFAULT_CHECKPOINT = "models/pico-fmnist.pt"
DEFAULT_SHIPPED_MODEL = "models/pico-fmnist.bvit"


def add_arguments(p):
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, metavar="CKPT",
                   help=f"float checkpoint to pack (default {DEFAULT_CHECKPOINT}, the shipped one)")
    p.add_argument("--train-steps", type=positive_int, metavar="N",
                   help="train a fresh pico model for N steps on Fashion-MNIST instead of loading one")
    p.add_argument("--images", type=positive_int, default=8, metavar="N",
                   help="Fashion-MNIST test images to classify (default 8)")
    p.add_argument("--heapsize", default="96k",
                   help="MicroPython heap, like a board's (default 96k: RP2040 / ESP32 class)")
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


def _run_board(exe, heapsize, board_dir, model, frame, size, backend):
    """classify.py on the unix port; returns (logits, the lines it printed)."""
    import os
    import subprocess

    env = dict(os.environ, MICROPYPATH=f"{board_dir}{os.pathsep}.frozen")
    cmd = [exe, "-X", f"heapsize={heapsize}", str(board_dir / "classify.py"),
           "--model", str(model), "--input", str(frame), "--size", size,
           "--backend", backend, "--logits"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    lines = proc.stdout.splitlines()
    logits = [line for line in lines if line.startswith("logits:")]
    if proc.returncode != 0 or not logits:
        raise RuntimeError("classify.py failed on MicroPython:\n" + proc.stdout + proc.stderr)
    return [int(v) for v in logits[0].split()[1:]], lines


def run(args) -> int:
    import filecmp
    from pathlib import Path

    import numpy as np

    from ..cli import main as cli
    from ..data import load_dataset
    from ..errors import UserError
    from ..intmodel import IntModel

    repo = Path(__file__).resolve().parents[3]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def step(msg):
        print(f"\n== {msg}", flush=True)

    checkpoint = Path(args.checkpoint)
    if args.train_steps:
        step(f"train: pico ButterflyViT on Fashion-MNIST, {args.train_steps} steps")
        checkpoint = out / "trained.pt"
        rc = cli(["train", "--preset", "pico", "--dataset", "fashion-mnist",
                  "--steps", str(args.train_steps), "--out", str(checkpoint)])
        if rc:
            return rc
    elif not checkpoint.exists():
        raise UserError(f"--checkpoint {checkpoint}: no such file (use --train-steps N to train one)")

    step(f"pack: {checkpoint} -> {out / 'model.bvit'}")
    model_file = out / "model.bvit"
    rc = cli(["pack", str(checkpoint), "-o", str(model_file)])
    if rc:
        return rc
    shipped = repo / DEFAULT_SHIPPED_MODEL
    if not args.train_steps and checkpoint.resolve() == (repo / DEFAULT_CHECKPOINT).resolve() \
            and shipped.exists():
        same = filecmp.cmp(model_file, shipped, shallow=False)
        print(f"packed file {'is byte-identical to' if same else 'DIFFERS from'} the shipped {DEFAULT_SHIPPED_MODEL}")

    step(f"classify {args.images} Fashion-MNIST test images: host reference vs MicroPython "
         f"unix port (heap {args.heapsize}, {args.backend} kernels)")
    net = IntModel.load(model_file)
    cfg = net.cfg
    test = load_dataset("fashion-mnist").test
    if args.images > len(test):
        raise UserError(f"--images {args.images}: the test set has {len(test)} images")
    frames = out / "frames"
    frames.mkdir(exist_ok=True)
    exe = _micropython()
    board_dir = out / "board"
    _install_board(exe, repo / "device", board_dir)
    size = f"{cfg.image_size}x{cfg.image_size}"
    classes = net.classes
    rows, exact, board_right, host_right = [], 0, 0, 0
    print(f"{'#':>3}  {'label':<12} {'host':<12} {'board':<12} {'logits':<10} {'ms':>6}  heap peak")
    for i in range(args.images):
        pixels = test.images[i].numpy().astype(np.uint8).reshape(cfg.image_size, cfg.image_size)
        frame = frames / f"test{i:04d}.gray"
        frame.write_bytes(pixels.tobytes())
        label = int(test.labels[i])
        host = net.forward_frame(pixels.tobytes(), cfg.image_size, cfg.image_size, "GRAYSCALE")
        host_logits = [int(v) for v in host.logits]
        board_logits, lines = _run_board(exe, args.heapsize, board_dir, model_file, frame,
                                         size, args.backend)
        timing = next((line for line in lines if line.startswith("time:")), "")
        ms = timing.split()[1] if timing else "?"
        peak = timing.split("peak")[1].split(" of")[0].strip() if "peak" in timing else "?"
        same = host_logits == board_logits
        exact += same
        host_top, board_top = int(np.argmax(host_logits)), int(np.argmax(board_logits))
        host_right += host_top == label
        board_right += board_top == label
        print(f"{i:>3}  {classes[label]:<12} {classes[host_top]:<12} {classes[board_top]:<12} "
              f"{'identical' if same else 'DIFFER':<10} {ms:>6}  {peak}", flush=True)
        rows.append(same)

    step("result")
    n = args.images
    print(f"integer logits identical on {exact}/{n} images; top-1 correct: host {host_right}/{n}, "
          f"board {board_right}/{n}")
    return 0 if exact == n else 1
