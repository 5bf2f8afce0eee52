"""The README's main job, end to end: pack the shipped checkpoint, classify on the real
MicroPython unix port in a board-sized heap, compare with the host integer reference."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = os.environ.get("CIFAR10_DATA")


def test_demo_reproduces_shipped_model_and_board_matches_host(tmp_path):
    exe = Path(sys.executable).parent / "butterflyvit"
    proc = subprocess.run([str(exe), "demo", "--images", "2", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "byte-identical to the shipped models/pico-fmnist.bvit" in out
    assert "integer logits identical on 2/2 images" in out
    assert (tmp_path / "model.bvit").read_bytes() == (REPO / "models/pico-fmnist.bvit").read_bytes()


def test_demo_checks_a_shipped_pair_in_any_checkout(tmp_path):
    """models/NAME.pt next to models/NAME.bvit, outside this checkout (another clone, a copy):
    the demo still compares its packing with that file, and says when they differ."""
    models = tmp_path / "clone" / "models"
    models.mkdir(parents=True)
    (models / "pico-fmnist.pt").write_bytes((REPO / "models/pico-fmnist.pt").read_bytes())
    tampered = bytearray((REPO / "models/pico-fmnist.bvit").read_bytes())
    tampered[-1] ^= 1
    (models / "pico-fmnist.bvit").write_bytes(tampered)
    exe = Path(sys.executable).parent / "butterflyvit"
    proc = subprocess.run([str(exe), "demo", "--checkpoint", str(models / "pico-fmnist.pt"),
                           "--images", "1", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DIFFERS from the shipped models/pico-fmnist.bvit" in proc.stdout

def synthetic_cifar(tmp_path, n=6):
    """CIFAR-10 batches in the official pickle layout, random pixels, n images each."""
    import pickle

    from test_hostile_files import bytes_keys, cifar_batches, write_cifar

    return write_cifar(tmp_path / "cifar", {k: bytes_keys(v) for k, v in cifar_batches(n=n).items()},
                       lambda o: pickle.dumps(o, protocol=4))


def test_demo_of_the_colour_model_sends_rgb565_frames_in_the_s3_eye_heap(tmp_path, monkeypatch, capsys):
    """`demo --model models/cifar10-pico.bvit --data CIFAR`: the shipped colour model as it is
    (no checkpoint, no packing); its data set comes from the file, its test images go to the
    board as 32x32 RGB565 frames (a colour camera's format) in the ESP32-S3-EYE's heap, and
    the board's logits equal the host's. CIFAR-10 here: batches in the official pickle layout
    with random pixels. A truncated model file is refused in one line."""
    from butterflyvit.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(REPO)
    data = synthetic_cifar(tmp_path)
    argv = ["demo", "--model", "models/cifar10-pico.bvit", "--images", "3", "--out", str(tmp_path / "out")]
    assert main(argv + ["--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "pack:" not in out
    assert "classify 3 CIFAR-10 test images (32x32 RGB565 frames)" in out
    assert "heap 150k" in out
    assert "integer logits identical on 3/3 images" in out
    # spread over the test set of 6: images 0, 2 and 4, each a 32x32 RGB565 frame
    frames = sorted((tmp_path / "out" / "frames").iterdir())
    assert [f.name for f in frames] == ["test00000.rgb565", "test00002.rgb565", "test00004.rgb565"]
    assert all(f.stat().st_size == 32 * 32 * 2 for f in frames)

    cut = tmp_path / "cut.bvit"
    cut.write_bytes((REPO / "models/cifar10-pico.bvit").read_bytes()[:1000])
    assert main(["demo", "--model", str(cut), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cut.bvit: file truncated" in err


@pytest.mark.skipif(not CIFAR10, reason="set CIFAR10_DATA to the CIFAR-10 copy the model was "
                    "calibrated on (cifar10-jpeg.tar.gz) to pack the shipped colour checkpoint")
def test_demo_packs_the_colour_checkpoint_to_the_shipped_file(tmp_path, capsys):
    from butterflyvit.cli import main

    argv = ["demo", "--checkpoint", str(REPO / "models/cifar10-pico.pt"), "--images", "2",
            "--data", CIFAR10, "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "byte-identical to the shipped models/cifar10-pico.bvit" in out
    assert "integer logits identical on 2/2 images" in out
