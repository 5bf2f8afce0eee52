"""Packing gives the same bytes on every machine: another SIMD width, BLAS kernel or thread
count, or a float64 forward whose last bits differ, must not change a single integer.

The packer's floats that decide integers are (1) the ternary row scales, (2) the calibrated
activation ranges. (1) are summed in order-independent fixed point; (2) come from a float64
forward and are rounded to 10 significant bits before any scale is formed."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from butterflyvit.modelfile import encode_model
from butterflyvit.quantize import RANGE_BITS, build_integer_model, round_range

from test_intmodel import TINY_MEAN, TINY_RANGES, TINY_STD, tiny_config, tiny_params

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "models" / "pico-fmnist.pt"


def test_round_range_keeps_ten_bits():
    for r in (1e-3, 0.1, 1.0, 3.14159, 1234.5678, 2.0 ** 20 + 1):
        q = round_range(r)
        assert abs(q - r) / r <= 2.0 ** -RANGE_BITS
        m, _ = np.frexp(q)
        assert float(m * (1 << RANGE_BITS)).is_integer()
    assert round_range(0.75) == 0.75                 # already on the grid: unchanged
    assert round_range(0.0) == round_range(1e-6)     # floor of the scale rule


def test_row_scales_do_not_depend_on_the_order_of_addition():
    """A float sum's last bits change with the order it adds in (what a wider SIMD unit or
    another thread split does); gamma must not. Reversing and shuffling the columns of W
    permutes the addends of every row sum."""
    from butterflyvit.ternary import absmean_scale, ternarize

    g = torch.Generator().manual_seed(1)
    for rows, cols in ((256, 64), (64, 256), (7, 1000), (3, 5)):
        w = torch.randn(rows, cols, generator=g) * 0.07
        ref = absmean_scale(w)
        for perm in (torch.arange(cols - 1, -1, -1), torch.randperm(cols, generator=g)):
            assert torch.equal(absmean_scale(w[:, perm]), ref)
            assert torch.equal(ternarize(w[:, perm])[0], ternarize(w)[0][:, perm])
        exact = torch.tensor([[float(np.sum(np.abs(r.double().numpy())) / cols)] for r in w],
                             dtype=torch.float64)
        assert torch.allclose(ref.double(), exact, rtol=1e-6, atol=0)


def test_last_bit_noise_in_the_ranges_changes_no_byte():
    """The calibration maxima perturbed by a few float64 ulps (as another CPU's forward
    gives) pack into the same file."""
    cfg = tiny_config()
    params, ranges = tiny_params(cfg), TINY_RANGES

    def pack(r):
        return encode_model(*build_integer_model(cfg, params, r, [TINY_MEAN], [TINY_STD]))

    ref = pack(ranges)
    rng = np.random.default_rng(7)
    for _ in range(5):
        noisy = {k: float(v) * (1.0 + rng.integers(-8, 9) * 2.0 ** -52) for k, v in ranges.items()}
        assert any(noisy[k] != ranges[k] for k in ranges)
        assert pack(noisy) == ref


def _pack(tmp_path, name, env_extra, threads):
    out = tmp_path / f"{name}.bvit"
    env = {**os.environ, **env_extra, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "butterflyvit.cli", "pack", str(CHECKPOINT), "-o", str(out),
                    "--calib", "64", "--threads", str(threads)],
                   env=env, check=True, capture_output=True, text=True)
    return out.read_bytes()


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="the shipped checkpoint is not in this checkout")
def test_packing_is_identical_across_simd_width_blas_and_threads(tmp_path):
    """The shipped checkpoint packed with PyTorch's scalar kernels, MKL held to SSE4.2 and one
    thread, and with the machine's widest kernels and two threads: byte-identical files.
    (Before the fix these differed in 8 integer sections.)"""
    plain = _pack(tmp_path, "plain", {"ATEN_CPU_CAPABILITY": "default",
                                      "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, threads=1)
    wide = _pack(tmp_path, "wide", {}, threads=2)
    assert plain == wide
