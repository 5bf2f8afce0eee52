"""ButterflyViT's C training kernels (host/butterflyvit/train_kernels.py,
csrc/train_kernels.c): built with the machine's compiler and run, their values and
gradients checked against PyTorch's autograd of the same functions in float64."""

import ctypes
import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from butterflyvit import train_kernels as tk
from butterflyvit.butterfly import butterfly, butterfly_blocks
from butterflyvit.config import ModelConfig
from butterflyvit.moe import ButterflyMoE


def config(dim, ffn, experts, stages, **kw):
    return ModelConfig(image_size=8, in_channels=1, patch_size=2, dim=dim, depth=1, heads=1,
                       ffn_dim=ffn, num_experts=experts, top_k=min(2, experts),
                       butterfly_stages=stages, **kw)


def layer(dim, ffn, experts, stages, seed=0):
    """A layer with large random angles (far from the identity)."""
    torch.manual_seed(seed)
    m = ButterflyMoE(config(dim, ffn, experts, stages))
    with torch.no_grad():
        m.phi.normal_(0, 1.0)
        m.theta.normal_(0, 1.0)
    return m


def inputs(m):
    """(q padded, phi masked, theta masked) as the layer gives them to the kernel."""
    phi, theta = m.phi * m.phi_mask, m.theta * m.theta_mask
    q = m.w_in.quantized_weight()
    fpad, dpad = 2 * theta.shape[-1], 2 * phi.shape[-1]
    return F.pad(q, (0, dpad - m.dim, 0, fpad - m.ffn_dim)), phi, theta


def test_the_kernels_build_here():
    assert tk.available(), f"C training kernels unavailable: {tk.why_unavailable()}"


@pytest.mark.parametrize("dim,ffn,experts,stages", [
    (64, 256, 64, 4),     # the pico layer
    (12, 20, 5, 2),       # both sides padded (16, 32)
    (8, 16, 1, 3),        # one expert, phi at its most stages
    (16, 32, 3, 0),       # no stages: W_e = Q for every expert
    (32, 64, 7, 5),       # every stage of dim
    (2, 4, 2, 1),         # the smallest rows (under the kernel's 16-lane sums)
])
@pytest.mark.parametrize("threads", [1, 3])
def test_values_and_gradients_match_float64_autograd(dim, ffn, experts, stages, threads):
    m = layer(dim, ffn, experts, stages)
    ref = ButterflyMoE(config(dim, ffn, experts, stages)).double()
    ref.load_state_dict(m.state_dict())
    w_ref = ref.expert_matrices_t("stages")
    g = torch.randn_like(w_ref)
    params = [m.phi, m.theta, m.w_in.weight]
    grads_ref = torch.autograd.grad((w_ref * g).sum(), [ref.phi, ref.theta, ref.w_in.weight],
                                    allow_unused=True)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert m.form_method() == "kernel"
        w = m.expert_matrices_t()
        grads = torch.autograd.grad((w * g.float()).sum(), params, allow_unused=True)
    finally:
        torch.set_num_threads(old)
    scale = w_ref.abs().max()
    assert (w.double() - w_ref).abs().max() <= 1e-6 * scale
    for got, want in zip(grads, grads_ref):
        if want is None:   # no stages: the angles do not enter
            assert got is None or not got.any()
            continue
        assert (got.double() - want).abs().max() <= 2e-6 * want.abs().max()


def test_the_layer_on_the_kernel_matches_the_eager_forming():
    """The whole grouped layer, forward and backward, kernel against PyTorch-op forming."""
    torch.manual_seed(1)
    cfg = config(16, 48, 6, 3, router_noise=0.0)
    a, b = ButterflyMoE(cfg, impl="grouped"), ButterflyMoE(cfg, impl="grouped", kernels=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 16)
    outs = []
    for m in (a, b):
        y = m(x)
        outs.append((y, torch.autograd.grad(y.square().sum(), list(m.parameters()))))
    assert a.form_method() == "kernel" and b.form_method() == "blocks"
    for u, v in zip([outs[0][0], *outs[0][1]], [outs[1][0], *outs[1][1]]):
        assert (u - v).abs().max() <= 1e-5 * v.abs().max()   # float rounding, not more


def test_floats_do_not_depend_on_scheduling_and_the_forward_not_on_threads():
    """Each expert is one thread's: W_e^T and the angles' gradients are the same bits at any
    thread count; dL/dQ sums the threads' parts in thread order (same bits at a given count)."""
    m = layer(64, 256, 64, 4)
    q, phi, theta = inputs(m)
    phi, theta = phi.detach().requires_grad_(), theta.detach().requires_grad_()
    q = q.detach().requires_grad_()
    g = [torch.randn(64, 256) for _ in range(64)]
    runs = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 2, 5):
            torch.set_num_threads(threads)
            ws = tk.form_expert_matrices_t(q, phi, theta)
            runs.append((torch.stack(ws).detach(), torch.autograd.grad(ws, (q, phi, theta), g)))
    finally:
        torch.set_num_threads(old)
    (w1, (q1, p1, t1)), (w2, (q2, p2, t2)), (w2b, (q2b, p2b, t2b)), (w5, (q5, p5, t5)) = runs
    for w in (w2, w2b, w5):
        assert torch.equal(w, w1)
    for p, t in ((p2, t2), (p2b, t2b), (p5, t5)):
        assert torch.equal(p, p1) and torch.equal(t, t1)
    assert torch.equal(q2, q2b)
    torch.testing.assert_close(q5, q1, rtol=1e-5, atol=1e-5)


def call_kernel(lib, q, phi, theta, grads):
    """(W^T stacked, dQ, dphi, dtheta) from one library, by its C functions directly."""
    e, n_l, _ = phi.shape
    fpad, dpad = q.shape
    cp, sp, ct, st = (t.contiguous() for t in (phi.cos(), phi.sin(), theta.cos(), theta.sin()))
    scratch = torch.empty(lib.bvit_forming_scratch_floats(fpad, dpad, n_l))
    wts = [torch.empty(dpad, fpad) for _ in range(e)]
    ptrs = lambda ts: (ctypes.c_void_p * len(ts))(*(t.data_ptr() for t in ts))  # noqa: E731
    lib.bvit_forming_forward(e, fpad, dpad, n_l, q.data_ptr(), cp.data_ptr(), sp.data_ptr(),
                             ct.data_ptr(), st.data_ptr(), ptrs(wts), scratch.data_ptr(), 1)
    gq, parts = torch.empty(fpad, dpad), torch.empty(fpad, dpad)
    gp, gt = torch.empty_like(cp), torch.empty_like(ct)
    lib.bvit_forming_backward(e, fpad, dpad, n_l, cp.data_ptr(), sp.data_ptr(), ct.data_ptr(),
                              st.data_ptr(), ptrs(wts), ptrs(grads), gq.data_ptr(),
                              parts.data_ptr(), gp.data_ptr(), gt.data_ptr(),
                              scratch.data_ptr(), 1)
    return torch.stack(wts), gq, gp, gt


def test_every_vector_width_gives_the_same_floats():
    """The build with per-CPU clones (AVX-512 / AVX2 / baseline, picked at load) and the
    baseline-only build: identical bits, so a model trains the same on another x86 CPU."""
    cloned = tk.bind(ctypes.CDLL(str(tk.build())))
    baseline = tk.bind(ctypes.CDLL(str(tk.build(("-DBVIT_TRAIN_KERNELS_NO_CLONES",)))))
    m = layer(64, 256, 8, 4, seed=5)
    q, phi, theta = (t.detach().contiguous() for t in inputs(m))
    grads = [torch.randn(64, 256) for _ in range(8)]
    for a, b in zip(call_kernel(cloned, q, phi, theta, grads),
                    call_kernel(baseline, q, phi, theta, grads)):
        assert torch.equal(a, b)
    for bs, n in [(16, 256), (4, 32)]:   # block_rows: its 16-wide loop and the general one
        x, blocks, starts, g = rows_case(n, bs, experts=5, rows=77, seed=bs)
        assert all(torch.equal(a, b) for a, b in zip(call_rows(cloned, x, blocks, starts, g),
                                                     call_rows(baseline, x, blocks, starts, g)))


def rows_case(n, bs, experts, rows, seed=0, empty=()):
    """Rows sorted by expert (experts in `empty` get none), random blocks, a gradient."""
    torch.manual_seed(seed)
    idx = torch.randint(0, experts, (rows,))
    for e in empty:
        idx[idx == e] = (e + 1) % experts
    idx, _ = idx.sort()
    starts = tk.segment_starts(torch.bincount(idx, minlength=experts).tolist())
    blocks = torch.randn(experts, n // bs, bs, bs)
    return torch.randn(rows, n), blocks, starts, torch.randn(rows, n)


def call_rows(lib, x, blocks, starts, g):
    e, _, bs, _ = blocks.shape
    n = x.shape[1]
    y, gx, gb = torch.empty_like(x), torch.empty_like(x), torch.empty_like(blocks)
    scratch = torch.empty(lib.bvit_rows_scratch_floats(n, bs))
    lib.bvit_rows_forward(e, n, bs, starts.data_ptr(), blocks.data_ptr(), x.data_ptr(),
                          y.data_ptr(), scratch.data_ptr(), 1)
    lib.bvit_rows_backward(e, n, bs, starts.data_ptr(), blocks.data_ptr(), x.data_ptr(),
                           g.data_ptr(), gx.data_ptr(), gb.data_ptr(), 1)
    return y, gx, gb


@pytest.mark.parametrize("n,bs,experts,rows", [
    (256, 16, 64, 2000),   # the pico layer's ffn side: the 16-wide loop, 128+ rows an expert
    (64, 16, 5, 37),       # few rows, under one packed chunk
    (1024, 16, 3, 700),    # long segments: several chunks of 128 rows
    (32, 8, 4, 50), (8, 2, 3, 9), (16, 1, 2, 5), (32, 32, 2, 20),   # the general loop
])
@pytest.mark.parametrize("threads", [1, 3])
def test_block_rows_match_float64_autograd(n, bs, experts, rows, threads):
    x, blocks, starts, g = rows_case(n, bs, experts, rows, empty=(experts - 1,))
    counts = starts.diff()
    idx = torch.repeat_interleave(torch.arange(experts), counts)
    x64, b64 = x.double().requires_grad_(), blocks.double().requires_grad_()
    want = torch.einsum("rbki,rbi->rbk", b64[idx], x64.view(rows, n // bs, bs)).reshape(rows, n)
    want_grads = torch.autograd.grad((want * g.double()).sum(), (x64, b64))
    x, blocks = x.requires_grad_(), blocks.requires_grad_()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = tk.block_rows(x, blocks, starts)
        grads = torch.autograd.grad((y * g).sum(), (x, blocks))
    finally:
        torch.set_num_threads(old)
    for got, ref in zip([y, *grads], [want, *want_grads]):
        assert (got.double() - ref).abs().max() <= 2e-6 * ref.abs().max()
    assert not grads[1][experts - 1].any()   # an expert without rows: zero gradient


def test_block_rows_give_the_same_bits_at_any_thread_count():
    """Each expert's segment is one thread's, its sums over its rows in order."""
    x, blocks, starts, g = rows_case(256, 16, 64, 3000, seed=2)
    x, blocks = x.requires_grad_(), blocks.requires_grad_()
    outs = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            y = tk.block_rows(x, blocks, starts)
            outs.append([y.detach(), *torch.autograd.grad(y, (x, blocks), g)])
    finally:
        torch.set_num_threads(old)
    for other in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs[0], other))


def test_block_rows_of_the_layer_are_its_butterflies():
    """block_rows with butterfly_blocks is the stage-by-stage butterfly of each row."""
    m = layer(64, 256, 6, 4)
    cos, sin = torch.cos(m.theta * m.theta_mask), torch.sin(m.theta * m.theta_mask)
    x, _, starts, _ = rows_case(256, 16, 6, 90)
    idx = torch.repeat_interleave(torch.arange(6), starts.diff())
    y = tk.block_rows(x, butterfly_blocks(cos, sin), starts)
    torch.testing.assert_close(y, butterfly(x, cos[idx], sin[idx]), rtol=1e-5, atol=1e-5)


def test_block_rows_refuse_what_does_not_fit():
    x, blocks, starts, _ = rows_case(32, 8, 4, 10)
    tk.block_rows(x, blocks, starts)
    with pytest.raises(ValueError, match="do not fit"):
        tk.block_rows(x[:, :16], blocks, starts)
    with pytest.raises(ValueError, match="do not fit"):
        tk.block_rows(x, blocks, starts.int())
    with pytest.raises(ValueError, match="rise from 0"):
        tk.block_rows(x, blocks, starts.flip(0))
    with pytest.raises(ValueError, match="rise from 0"):
        tk.block_rows(x[:9], blocks, starts)
    with pytest.raises(ValueError, match="4-D"):
        tk.block_rows(x, blocks[0], starts)


def test_shapes_that_do_not_fit_are_refused():
    q, phi, theta = torch.zeros(32, 16), torch.zeros(3, 2, 8), torch.zeros(3, 2, 16)
    tk.form_expert_matrices_t(q, phi, theta)
    with pytest.raises(ValueError, match="do not fit"):
        tk.form_expert_matrices_t(torch.zeros(32, 8), phi, theta)
    with pytest.raises(ValueError, match="do not fit"):
        tk.form_expert_matrices_t(q, phi, torch.zeros(3, 3, 16))
    with pytest.raises(ValueError, match="2-D"):
        tk.form_expert_matrices_t(q, phi[0], theta)
    with pytest.raises(ValueError, match="form must be"):
        ButterflyMoE(config(8, 16, 2, 1)).expert_matrices_t("fused")


def test_other_dtypes_and_devices_use_the_eager_forming():
    m = layer(8, 16, 2, 1).double()
    assert m.form_method() == "blocks"
    assert m.expert_matrices_t().dtype == torch.float64


SCRIPT = """
import warnings, torch
from butterflyvit import train_kernels
from butterflyvit.config import ModelConfig
from butterflyvit.moe import ButterflyMoE
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    m = ButterflyMoE(ModelConfig(image_size=8, in_channels=1, patch_size=2, dim=8, depth=1,
                                 heads=1, ffn_dim=16, num_experts=3, top_k=2,
                                 butterfly_stages=2))
    y = m(torch.randn(1, 16, 8)); y.sum().backward()
    m(torch.randn(1, 16, 8))
print(m.form_method(), "|", train_kernels.why_unavailable(), "|",
      [str(w.message) for w in caught if "kernels" in str(w.message)])
"""


@pytest.mark.parametrize("setting", ["no compiler", "BUTTERFLYVIT_TRAIN_KERNELS=off"])
def test_without_the_kernel_training_falls_back_to_pytorch_ops(tmp_path, setting):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))   # nothing built yet
    if setting == "no compiler":
        env["PATH"] = str(tmp_path)        # no cc, gcc or clang to be found
        env.pop("CC", None)
    else:
        env["BUTTERFLYVIT_TRAIN_KERNELS"] = "off"
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True).stdout
    method, why, warned = (s.strip() for s in out.split("|"))
    assert method == "blocks"
    if setting == "no compiler":
        assert why == "no C compiler (cc, gcc or clang) on PATH"
        assert warned.count("C training kernels are unavailable") == 1   # once, not per step
    else:
        assert why == "BUTTERFLYVIT_TRAIN_KERNELS=off" and warned == "[]"
    assert not list(tmp_path.glob("butterflyvit/*.so"))


def test_a_compiler_error_is_reported_with_its_message(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="(?s)failed to build train_kernels.c:.*nonsense"):
        tk.build(("-fnonsense-flag",))
    assert not list(tmp_path.glob("butterflyvit/*"))   # no half-written library left
