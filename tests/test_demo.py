"""The README's main job, end to end: pack the shipped checkpoint, classify on the real
MicroPython unix port in a board-sized heap, compare with the host integer reference."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_reproduces_shipped_model_and_board_matches_host(tmp_path):
    exe = Path(sys.executable).parent / "butterflyvit"
    proc = subprocess.run([str(exe), "demo", "--images", "2", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "byte-identical to the shipped models/pico-fmnist.bvit" in out
    assert "integer logits identical on 2/2 images" in out
    assert (tmp_path / "model.bvit").read_bytes() == (REPO / "models/pico-fmnist.bvit").read_bytes()
