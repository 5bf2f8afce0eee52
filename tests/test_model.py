"""Model pieces: butterfly rotations, ternary substrate, router and losses, MoE layers, ViT."""

import itertools
import math

import pytest
import torch

from butterflyvit.butterfly import (ButterflyRotation, angle_mask, butterfly, butterfly_blocks,
                                    butterfly_matrix, check_stages, init_angles, max_stages,
                                    padded_size)
from butterflyvit.config import ModelConfig
from butterflyvit.moe import (ButterflyMoE, Router, StandardMoE, expert_path_costs,
                              grouped_linear, load_balance_loss, neighbour_agreement,
                              smooth_logits, smoothness_loss)
from butterflyvit.presets import PRESETS, preset_config
from butterflyvit.ternary import TernaryLinear, absmean_scale, quantize_ste, ternarize
from butterflyvit.vit import ViT, patchify, routing_stats

torch.set_num_threads(1)


def naive_butterfly(x, angles, n):
    """Per-pair loop straight from the paper's description, in float64 Python: pad, rotate, truncate."""
    n_pad = padded_size(n)
    v = [float(t) for t in x] + [0.0] * (n_pad - n)
    for l in range(angles.shape[0]):
        s = 2 ** (l + 1)
        for block in range(n_pad // s):
            for j in range(s // 2):
                a = float(angles[l, block * (s // 2) + j])
                i1, i2 = block * s + j, block * s + j + s // 2
                x1, x2 = v[i1], v[i2]
                v[i1] = math.cos(a) * x1 - math.sin(a) * x2
                v[i2] = math.sin(a) * x1 + math.cos(a) * x2
    return torch.tensor(v[:n], dtype=torch.float64)


SIZES = [1, 2, 3, 5, 6, 8, 12, 16, 17, 31, 32, 48, 64, 100]


def random_angles(n, n_l, gen, std=1.0):
    return torch.randn(n_l, padded_size(n) // 2, generator=gen, dtype=torch.float64) * std \
        * angle_mask(n, n_l)


# ------------------------------------------------------------------------------ butterfly

def test_padded_size_and_stages():
    assert [padded_size(n) for n in (1, 2, 3, 4, 5, 64, 65, 1024)] == [1, 2, 4, 4, 8, 64, 128, 1024]
    assert max_stages(256) == 8 and max_stages(1024) == 10 and max_stages(100) == 7
    with pytest.raises(ValueError):
        check_stages(16, 5)
    with pytest.raises(ValueError):
        ButterflyMoE(ModelConfig(dim=8, ffn_dim=16, heads=1, butterfly_stages=4))


@pytest.mark.parametrize("n", SIZES)
def test_butterfly_orthogonal_all_stages(n):
    gen = torch.Generator().manual_seed(n)
    for n_l in range(max_stages(n) + 1):
        a = random_angles(n, n_l, gen)
        b = butterfly_matrix(a, n)
        assert b.shape == (n, n)
        torch.testing.assert_close(b.T @ b, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)
        x = torch.randn(7, n, generator=gen, dtype=torch.float64)
        y = butterfly(x, torch.cos(a), torch.sin(a))
        torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-12, rtol=1e-12)
        # transpose undoes it
        back = butterfly(y, torch.cos(a), torch.sin(a), transpose=True)
        torch.testing.assert_close(back, x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n,n_l", [(2, 1), (4, 2), (5, 3), (8, 3), (12, 2), (16, 4), (20, 5), (33, 6)])
def test_butterfly_matches_naive_loop(n, n_l):
    gen = torch.Generator().manual_seed(100 + n)
    a = random_angles(n, n_l, gen)
    x = torch.randn(4, n, generator=gen, dtype=torch.float64)
    y = butterfly(x, torch.cos(a), torch.sin(a))
    for row in range(4):
        torch.testing.assert_close(y[row], naive_butterfly(x[row], a, n), atol=1e-12, rtol=0)


def test_butterfly_zero_angles_identity():
    for n in SIZES:
        for n_l in range(max_stages(n) + 1):
            a = torch.zeros(n_l, padded_size(n) // 2)
            x = torch.randn(3, n)
            assert torch.equal(butterfly(x, torch.cos(a), torch.sin(a)), x)
    rot = ButterflyRotation(16, 4)
    with torch.no_grad():
        rot.angles.zero_()
    x = torch.randn(2, 16)
    assert torch.equal(rot(x), x)


def test_angle_layout_index():
    """Angle index block*(s/2)+j at stage l rotates the pair (block*s+j, block*s+j+s/2)."""
    n, n_l = 8, 3
    for l in range(n_l):
        s = 2 ** (l + 1)
        for block, j in itertools.product(range(n // s), range(s // 2)):
            a = torch.zeros(n_l, n // 2, dtype=torch.float64)
            a[l, block * (s // 2) + j] = 0.3
            b = butterfly_matrix(a, n)
            i1, i2 = block * s + j, block * s + j + s // 2
            expect = torch.eye(n, dtype=torch.float64)
            expect[i1, i1] = expect[i2, i2] = math.cos(0.3)
            expect[i1, i2], expect[i2, i1] = -math.sin(0.3), math.sin(0.3)
            torch.testing.assert_close(b, expect)


def test_angle_mask_padding_pairs():
    m = angle_mask(5, 3)  # padded to 8
    assert m.shape == (3, 4)
    # stage 0 pairs (0,1),(2,3),(4,5),(6,7): (4,5) and (6,7) touch padding
    assert m[0].tolist() == [True, True, False, False]
    # stage 1 pairs (0,2),(1,3),(4,6),(5,7)
    assert m[1].tolist() == [True, True, False, False]
    # stage 2 pairs (0,4),(1,5),(2,6),(3,7)
    assert m[2].tolist() == [True, False, False, False]
    assert angle_mask(16, 4).all()


def test_per_row_angles_and_blocks():
    gen = torch.Generator().manual_seed(3)
    n, n_l, e = 24, 3, 5
    a = torch.stack([random_angles(n, n_l, gen) for _ in range(e)])  # (E, n_l, 16)
    idx = torch.tensor([0, 3, 3, 1, 4, 2, 0])
    x = torch.randn(len(idx), n, generator=gen, dtype=torch.float64)
    y = butterfly(x, torch.cos(a)[idx], torch.sin(a)[idx])
    for r, i in enumerate(idx.tolist()):
        torch.testing.assert_close(y[r], butterfly(x[r], torch.cos(a[i]), torch.sin(a[i])))
    blocks = butterfly_blocks(torch.cos(a), torch.sin(a))  # (E, 32/8, 8, 8)
    assert blocks.shape == (e, 4, 8, 8)
    for i in range(e):
        full = torch.zeros(32, 32, dtype=torch.float64)
        ap = torch.cat([a[i], torch.zeros(n_l, 0, dtype=torch.float64)], -1)
        full = butterfly_matrix(ap, 32)
        torch.testing.assert_close(torch.block_diag(*blocks[i]), full)


@pytest.mark.parametrize("lead", [(), (2, 3)])
@pytest.mark.parametrize("n_l", [0, 2, 4])
def test_butterfly_blocks_any_leading_shape(lead, n_l):
    """Blocks for no leading dimension or several: each the dense B's diagonal blocks."""
    gen = torch.Generator().manual_seed(n_l)
    a = torch.randn(*lead, n_l, 8, generator=gen, dtype=torch.float64)
    blocks = butterfly_blocks(torch.cos(a), torch.sin(a))
    bs = 1 << n_l
    assert blocks.shape == (*lead, 16 // bs, bs, bs)
    for i in itertools.product(*map(range, lead)):
        torch.testing.assert_close(torch.block_diag(*blocks[i]), butterfly_matrix(a[i], 16))


def test_init_angles_small_and_masked():
    a = init_angles(64, 20, 4)
    assert a.shape == (64, 4, 16)
    assert a.abs().max() < 0.2 and a.std() > 0.005
    assert (a * ~angle_mask(20, 4) == 0).all()


# -------------------------------------------------------------------------------- ternary

def test_ternary_values_and_scales():
    w = torch.tensor([[0.9, -0.1, 0.4, -2.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, -1.0, 0.5]])
    t, g = ternarize(w)
    assert set(t.unique().tolist()) <= {-1.0, 0.0, 1.0}
    torch.testing.assert_close(g[:, 0], torch.tensor([0.85, 1e-5, 0.875]))
    # row 0: w/g = 1.06, -0.12, 0.47, -2.35 -> 1, 0, 0, -1
    assert t[0].tolist() == [1, 0, 0, -1]
    assert t[1].tolist() == [0, 0, 0, 0]
    assert t[2].tolist() == [1, 1, -1, 1]  # 0.5/0.875 = 0.57 -> 1
    torch.testing.assert_close(absmean_scale(w), g)


def test_ternary_ste_gradient_is_identity():
    w = torch.randn(6, 10, requires_grad=True)
    g = torch.randn(6, 10)
    q = quantize_ste(w)
    t, gamma = ternarize(w.detach())
    torch.testing.assert_close(q.detach(), t * gamma)
    (q * g).sum().backward()
    torch.testing.assert_close(w.grad, g)


def test_ternary_linear_exports():
    lin = TernaryLinear(12, 5, bias=True)
    x = torch.randn(3, 12)
    w = lin.trits().float() * lin.scales()[:, None]
    torch.testing.assert_close(lin(x), x @ w.T + lin.bias)
    assert lin.trits().dtype == torch.int8


# ----------------------------------------------------------------------- router and losses

def test_router_topk_softmax():
    torch.manual_seed(0)
    r = Router(8, 6, 2, noise=0.1).eval()
    x = torch.randn(2, 4, 8)
    gates, idx, probs = r(x)
    z = x @ r.weight.T
    top, expect_idx = z.topk(2, -1)
    assert torch.equal(idx, expect_idx)
    torch.testing.assert_close(gates, torch.softmax(top, -1))
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(probs, torch.softmax(z, -1))
    # eval: deterministic; training: noisy logits
    assert torch.equal(r(x)[1], idx)
    r.train()
    torch.manual_seed(1)
    _, _, p1 = r(x)
    assert not torch.allclose(p1, probs)


def test_load_balance_loss_has_gradient():
    torch.manual_seed(0)
    r = Router(8, 4, 2, noise=0.0)
    x = torch.randn(3, 9, 8)
    gates, idx, probs = r(x)
    loss = load_balance_loss(probs, idx, 4)
    loss.backward()
    assert r.weight.grad is not None and r.weight.grad.abs().sum() > 0
    # uniform probabilities and counts give exactly 1
    p = torch.full((10, 4), 0.25)
    i = torch.arange(20).reshape(10, 2) % 4
    assert abs(float(load_balance_loss(p, i, 4)) - 1.0) < 1e-6


def test_smoothed_routing_hand_computed():
    # 3x3 grid, one expert channel holding 0..8 row-major, second channel all ones
    z = torch.zeros(1, 9, 2)
    z[0, :, 0] = torch.arange(9.0)
    z[0, :, 1] = 1.0
    s = smooth_logits(z, 3)
    expect = torch.tensor([
        (0 + 1 + 3) / 3, (1 + 0 + 2 + 4) / 4, (2 + 1 + 5) / 3,
        (3 + 0 + 6 + 4) / 4, (4 + 1 + 7 + 3 + 5) / 5, (5 + 2 + 8 + 4) / 4,
        (6 + 3 + 7) / 3, (7 + 6 + 8 + 4) / 4, (8 + 7 + 5) / 3])
    torch.testing.assert_close(s[0, :, 0], expect)
    torch.testing.assert_close(s[0, :, 1], torch.ones(9))
    # the router uses it for both top-k and gates
    r = Router(2, 2, 1, noise=0.0, smooth=True, grid=3).eval()
    with torch.no_grad():
        r.weight.copy_(torch.eye(2))
    gates, idx, probs = r(z)
    torch.testing.assert_close(probs, torch.softmax(s, -1))
    assert idx[0, :, 0].tolist() == (s[0].argmax(-1)).tolist()


def test_smoothness_loss_and_agreement():
    const = torch.softmax(torch.randn(1, 1, 5), -1).expand(2, 16, 5).contiguous()
    assert float(smoothness_loss(const, 4)) == 0.0
    varied = torch.softmax(torch.randn(2, 16, 5), -1)
    assert float(smoothness_loss(varied, 4)) > 0
    # hand case on a 2x2 grid: P = one-hot experts [[0, 0], [1, 0]]
    p = torch.eye(2)[torch.tensor([0, 0, 1, 0])][None]
    # pairs: (0,1) same, (2,3) differ, (0,2) differ, (1,3) same -> 2 pairs x 2 / 4
    assert float(smoothness_loss(p, 2)) == pytest.approx(1.0)
    top1 = torch.tensor([[0, 0, 1, 0]])
    assert neighbour_agreement(top1, 2) == (2, 4)


# ------------------------------------------------------------------------------ MoE layers

def small_cfg(**kw):
    d = dict(image_size=8, in_channels=1, patch_size=2, dim=12, depth=2, heads=2, ffn_dim=20,
             num_experts=5, top_k=2, butterfly_stages=2)
    d.update(kw)
    return ModelConfig(**d)


@pytest.mark.parametrize("dim,ffn,n_l", [(16, 32, 4), (12, 20, 2), (24, 40, 3), (8, 8, 0)])
def test_butterfly_moe_paths_agree(dim, ffn, n_l):
    """grouped, slots and factored: the same values and gradients (float rounding apart)."""
    torch.manual_seed(0)
    m = ButterflyMoE(small_cfg(dim=dim, ffn_dim=ffn, heads=2, butterfly_stages=n_l))
    with torch.no_grad():
        m.phi.mul_(20).mul_(m.phi_mask)   # larger angles so the test is not near identity
        m.theta.mul_(20).mul_(m.theta_mask)
    x = torch.randn(30, dim)
    idx = torch.randint(0, 4, (30,))      # expert 4 gets no rows: an empty slot column
    params = [m.phi, m.theta, m.w_in.weight] if n_l else [m.w_in.weight]
    ref = m.expert_hidden(x, idx, "factored")
    gref = torch.autograd.grad(ref.square().sum(), params)
    for impl in ("grouped", "slots", "auto"):
        for kernels in (True, False):   # C kernels (forming, block_rows) and PyTorch ops
            m.kernels = kernels
            a = m.expert_hidden(x, idx, impl)
            torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-5)
            for u, v in zip(torch.autograd.grad(a.square().sum(), params), gref):
                torch.testing.assert_close(u, v, atol=1e-4, rtol=1e-4)
    # stage-wise materialisation agrees with the block one and the C kernel's
    torch.testing.assert_close(m.expert_matrices_t("blocks"), m.expert_matrices_t("stages"),
                               atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(m.expert_matrices_t("kernel"), m.expert_matrices_t("stages"),
                               atol=1e-6, rtol=1e-6)


def test_expert_path_chooser():
    """The cost model's decisions at the two benchmarked shapes (E 64, top-2, n_l 4) and the
    whole layer's output on the path it takes equals the forced paths'."""
    pico = ButterflyMoE(small_cfg(dim=64, ffn_dim=256, heads=4, num_experts=64, butterfly_stages=4))
    wide = ButterflyMoE(small_cfg(dim=256, ffn_dim=1024, heads=4, num_experts=64,
                                  butterfly_stages=4))
    # 4,096 tokens x 2: forming 64 small matrices is cheaper than 8,192 rows' block rotations
    assert pico.choose_impl(8192, 128) == "grouped"
    assert pico.choose_impl(8192, 160) == "grouped"
    # 1,024 tokens x 2: forming 64 matrices of 1024x256 costs more than the shared product
    assert wide.choose_impl(2048, 32) == "slots"
    assert wide.choose_impl(2048, 60) == "slots"
    # few rows: slots even at the small shape; one expert taking all rows: factored, unless
    # the C kernel runs slots on the rows themselves (no slot table to pad)
    assert pico.choose_impl(256, 8) == "slots"
    assert wide.uses_kernels() and wide.choose_impl(2048, 2048) == "slots"
    wide.kernels = False
    assert wide.choose_impl(2048, 2048) == "factored"
    costs = expert_path_costs(2048, 32, 64, 256, 1024, 4)
    assert costs["slots"] < costs["factored"] < costs["grouped"]
    with pytest.raises(ValueError, match="impl must be"):
        ButterflyMoE(small_cfg(), impl="fast")
    # the layer: "auto" records its path and gives the forced paths' output
    torch.manual_seed(3)
    m = ButterflyMoE(small_cfg(dim=16, ffn_dim=32, heads=2, butterfly_stages=3)).eval()
    x = torch.randn(2, 16, 16)
    y = m(x)
    assert m.last_impl in ButterflyMoE.IMPLS
    for impl in ButterflyMoE.IMPLS:
        for kernels in (True, False):
            m.impl, m.kernels = impl, kernels
            torch.testing.assert_close(m(x), y, atol=1e-5, rtol=1e-5)
            assert m.last_impl == impl


def test_butterfly_moe_matches_definition():
    """y = Q(W_out) sum_e g_e ReLU(B(theta_e) Q(W_in) B(phi_e) x) + b, from dense matrices."""
    torch.manual_seed(1)
    cfg = small_cfg(dim=8, ffn_dim=16, butterfly_stages=3, num_experts=3)
    m = ButterflyMoE(cfg).eval()
    with torch.no_grad():
        m.phi.normal_().mul_(m.phi_mask)
        m.theta.normal_().mul_(m.theta_mask)
    x = torch.randn(2, 16, 8)
    y = m(x)
    gates, idx, _ = m.router(x)
    q_in, q_out = m.w_in.quantized_weight(), m.w_out.quantized_weight()
    for b, t in [(0, 0), (1, 7), (1, 15)]:
        h = torch.zeros(16)
        for slot in range(cfg.top_k):
            e = int(idx[b, t, slot])
            we = butterfly_matrix(m.theta[e], 16) @ q_in @ butterfly_matrix(m.phi[e], 8)
            h += gates[b, t, slot] * torch.relu(we @ x[b, t])
        torch.testing.assert_close(y[b, t], q_out @ h + m.w_out.bias, atol=1e-5, rtol=1e-5)


def unsorted_layer(m, x):
    """The MoE layers as first written, every product's output put back in token order and
    the k rows summed after: the reference for the sorted rows (ExpertGroups)."""
    b, n, d = x.shape
    gates, idx = m._route(x)
    k, flat = m.top_k, idx.reshape(-1)
    rows = x.reshape(b * n, 1, d).expand(b * n, k, d).reshape(b * n * k, d)
    if isinstance(m, StandardMoE):
        h = torch.relu(grouped_linear(rows, flat, m.w1.transpose(1, 2), m.b1))
        y = grouped_linear(h, flat, m.w2.transpose(1, 2), m.b2)
        return (y.reshape(b * n, k, d) * gates.reshape(b * n, k, 1)).sum(1).reshape(b, n, d)
    h = torch.relu(grouped_linear(rows, flat, m.expert_matrices_t()))
    h = (h.reshape(b * n, k, m.ffn_dim) * gates.reshape(b * n, k, 1)).sum(1)
    return m.w_out(h).reshape(b, n, d)


@pytest.mark.parametrize("ffn", ["moe", "butterfly"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_sorted_rows_give_the_unsorted_layers_bits(ffn, top_k):
    """Rows sorted once, each expert's output added into its tokens' rows segment by segment
    (ExpertGroups.mix_experts): the standard MoE gives the very floats, in
    the output and in every gradient, of the layer that puts each product back in token
    order (top-1 and top-2: a sum of two is the same float in either order), so its
    training curves do not move. ButterflyViT's grouped path also gates the rows before the
    expert (g ReLU(W x) = ReLU(W (g x))): the same values up to float rounding."""
    torch.manual_seed(4)
    cfg = small_cfg(dim=16, ffn_dim=32, heads=2, butterfly_stages=3, num_experts=6,
                    top_k=top_k, router_noise=0.0)
    m = (ButterflyMoE(cfg, impl="grouped") if ffn == "butterfly" else StandardMoE(cfg)).train()
    x = torch.randn(3, 16, 16, requires_grad=True)
    outs = []
    for f in (m, lambda x: unsorted_layer(m, x)):
        y = f(x)
        grads = torch.autograd.grad(y.square().sum(), [x, *m.parameters()], allow_unused=True)
        outs.append((y, grads))
    (y, grads), (y_ref, grads_ref) = outs
    same = torch.equal if ffn == "moe" else \
        (lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-5))
    assert same(y, y_ref)
    for g, g_ref in zip(grads, grads_ref):
        assert (g is None and g_ref is None) or same(g, g_ref)


def test_grouped_linear_matches_rowwise():
    torch.manual_seed(0)
    w = torch.randn(4, 6, 3)
    bias = torch.randn(4, 3)
    x = torch.randn(11, 6)
    idx = torch.tensor([3, 0, 0, 2, 3, 3, 1, 0, 2, 2, 3])
    y = grouped_linear(x, idx, w, bias)
    for i in range(11):
        torch.testing.assert_close(y[i], x[i] @ w[idx[i]] + bias[idx[i]])


def test_standard_moe_matches_definition():
    torch.manual_seed(2)
    cfg = small_cfg(num_experts=4)
    m = StandardMoE(cfg).eval()
    x = torch.randn(1, 16, cfg.dim)
    y = m(x)
    gates, idx, _ = m.router(x)
    for t in (0, 5, 15):
        expect = sum(gates[0, t, s] * (m.w2[e] @ torch.relu(m.w1[e] @ x[0, t] + m.b1[e]) + m.b2[e])
                     for s, e in enumerate(idx[0, t].tolist()))
        torch.testing.assert_close(y[0, t], expect, atol=1e-5, rtol=1e-5)


# -------------------------------------------------------------------------------------- ViT

def test_patchify_channel_major():
    img = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    p = patchify(img, 2)
    assert p.shape == (2, 4, 12)
    # patch 1 = grid row 0, col 1: pixels rows 0..1, cols 2..3, channel-major
    expect = torch.stack([img[0, c, r, 2 + col] for c in range(3) for r in range(2) for col in range(2)])
    torch.testing.assert_close(p[0, 1], expect)


@pytest.mark.parametrize("ffn", ["butterfly", "moe", "dense"])
def test_vit_forward_shapes(ffn):
    torch.manual_seed(0)
    cfg = small_cfg(ffn=ffn, in_channels=3, num_classes=7)
    m = ViT(cfg)
    logits, aux = m(torch.randn(3, 3, 8, 8), return_aux=True)
    assert logits.shape == (3, 7)
    if ffn == "dense":
        assert aux["counts"] is None and float(aux["balance"]) == 0
    else:
        assert aux["counts"].shape == (2, 5)
        assert int(aux["counts"].sum()) == 2 * 3 * 16 * 2
        assert [t.shape for t in aux["top1"]] == [(3, 16), (3, 16)]
        (logits.sum() + aux["balance"] + aux["smooth"]).backward()
        assert m.blocks[0].ffn.router.weight.grad.abs().sum() > 0
        stats = routing_stats(aux["counts"])
        assert 0 < stats["mean_effective_experts_frac"] <= 1


def test_vit_parameter_names_and_shapes():
    cfg = preset_config("pico")
    shapes = {k: tuple(v.shape) for k, v in ViT(cfg).state_dict().items()}
    assert shapes["patch_embed.weight"] == (64, 16)
    assert shapes["pos_embed"] == (49, 64)
    assert shapes["blocks.0.attn.qkv.weight"] == (192, 64)
    assert shapes["blocks.3.ffn.router.weight"] == (64, 64)
    assert shapes["blocks.3.ffn.w_in.weight"] == (256, 64)
    assert shapes["blocks.3.ffn.w_out.weight"] == (64, 256)
    assert shapes["blocks.3.ffn.w_out.bias"] == (64,)
    assert shapes["blocks.3.ffn.phi"] == (64, 4, 32)
    assert shapes["blocks.3.ffn.theta"] == (64, 4, 128)
    assert shapes["head.weight"] == (10, 64)
    assert not any("mask" in k for k in shapes)  # masks are derived, not stored


def test_presets():
    assert set(PRESETS) >= {"pico", "paper", "tiny"}
    p = preset_config("paper")
    assert (p.image_size, p.in_channels, p.dim, p.ffn_dim, p.depth, p.num_experts,
            p.butterfly_stages, p.heads) == (32, 3, 256, 1024, 7, 64, 4, 4)
    assert preset_config("pico", num_experts=8).num_experts == 8


def test_smooth_routing_switch():
    torch.manual_seed(0)
    m = ViT(small_cfg()).eval()
    x = torch.randn(2, 1, 8, 8)
    a = m(x)
    m.set_smooth_routing(True)
    assert all(layer.router.smooth for layer in m.moe_layers())
    b = m(x)
    m.set_smooth_routing(False)
    torch.testing.assert_close(m(x), a)
    assert b.shape == a.shape


def test_config_rejects_more_butterfly_stages_than_the_padded_dimension_allows():
    from butterflyvit.config import ModelConfig

    ModelConfig(dim=48, ffn_dim=256, butterfly_stages=6)      # 48 pads to 64: 6 stages fit
    with pytest.raises(ValueError, match="butterfly_stages must be in 0..4 for dim 16, got 5"):
        ModelConfig(dim=16, heads=4, butterfly_stages=5)
    ModelConfig(dim=16, heads=4, butterfly_stages=5, ffn="dense")  # no butterflies: no limit
