"""Feed-forward layers: ButterflyViT MoE, standard MoE, dense; the router and its losses.

Shapes: tokens x of shape (B, N, dim) with N = grid*grid patch tokens in row-major grid
order. Every feed-forward returns (B, N, dim) and leaves its routing side results in
`self.aux` (see `RoutingAux`); the ViT collects them.

Router (as in the paper): logits = x R^T with R = `router.weight` (E, dim), no bias.
  1. optional smoothed routing: logits <- smooth_logits(logits, grid)
  2. training only: logits += N(0, router_noise^2)
  3. probs = softmax(logits) over all E experts (for the losses)
  4. top-k of logits (ties: torch.topk order; the integer reference fixes its own rule)
  5. gates = softmax over the k selected logits only
"""

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from . import train_kernels
from .butterfly import (angle_mask, butterfly, butterfly_blocks, check_stages, init_angles,
                        padded_size)
from .ternary import TernaryLinear


# ---------------------------------------------------------------------------- routing rules

def neighbour_count(grid: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(grid, grid): 1 + the number of existing 4-neighbours of each patch (3, 4 or 5)."""
    one = torch.ones(grid, grid, device=device, dtype=dtype)
    cnt = one.clone()
    cnt[1:, :] += 1
    cnt[:-1, :] += 1
    cnt[:, 1:] += 1
    cnt[:, :-1] += 1
    return cnt


def smooth_logits(logits: torch.Tensor, grid: int) -> torch.Tensor:
    """Smoothed routing: each patch's logits become the mean of its own and its existing
    4-neighbours' logits on the grid (corners average 3 values, edges 4, inside 5).

    logits: (..., grid*grid, E) in row-major patch order. Same shape out.
    The rule, for patch (r, c):  sum of logits over {(r,c), (r-1,c), (r+1,c), (r,c-1),
    (r,c+1)} that lie inside the grid, divided by how many of them do.
    """
    *lead, n, e = logits.shape
    if n != grid * grid:
        raise ValueError(f"{n} tokens do not form a {grid}x{grid} grid")
    x = logits.reshape(*lead, grid, grid, e)
    total = x.clone()
    total[..., 1:, :, :] += x[..., :-1, :, :]   # neighbour above
    total[..., :-1, :, :] += x[..., 1:, :, :]   # neighbour below
    total[..., :, 1:, :] += x[..., :, :-1, :]   # neighbour left
    total[..., :, :-1, :] += x[..., :, 1:, :]   # neighbour right
    cnt = neighbour_count(grid, logits.device, logits.dtype)
    return (total / cnt[:, :, None]).reshape(*lead, n, e)


def load_balance_loss(probs: torch.Tensor, idx: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch-style E * sum_i f_i * P_i: f_i the fraction of the top-k assignments that go to
    expert i (hard counts, no gradient), P_i the mean router probability of expert i
    (gradient flows to the router through P). 1.0 when perfectly balanced."""
    p = probs.reshape(-1, num_experts).mean(0)
    counts = torch.bincount(idx.reshape(-1), minlength=num_experts).to(probs.dtype)
    f = counts / counts.sum().clamp_min(1)
    return num_experts * (f * p).sum()


def smoothness_loss(probs: torch.Tensor, grid: int) -> torch.Tensor:
    """Spatial smoothness regulariser (the paper's default): mean over all 4-connected
    neighbour pairs of the patch grid of ||P_i - P_j||^2, P the full softmax router
    probabilities. probs: (B, grid*grid, E). 0 when all patches route alike."""
    b, n, e = probs.shape
    p = probs.reshape(b, grid, grid, e)
    dv = (p[:, 1:] - p[:, :-1]).pow(2).sum(-1)      # (B, grid-1, grid) vertical pairs
    dh = (p[:, :, 1:] - p[:, :, :-1]).pow(2).sum(-1)  # (B, grid, grid-1) horizontal pairs
    pairs = dv.numel() + dh.numel()
    if pairs == 0:
        return probs.new_zeros(())
    return (dv.sum() + dh.sum()) / pairs


def neighbour_agreement(top1: torch.Tensor, grid: int) -> tuple[int, int]:
    """(pairs sharing their top-1 expert, all 4-neighbour pairs) for top1 of (B, grid*grid)."""
    t = top1.reshape(-1, grid, grid)
    same = (t[:, 1:] == t[:, :-1]).sum() + (t[:, :, 1:] == t[:, :, :-1]).sum()
    pairs = t.shape[0] * 2 * grid * (grid - 1)
    return int(same), pairs


@dataclass
class RoutingAux:
    """What one MoE layer leaves after a forward pass."""
    balance: torch.Tensor   # scalar, load-balancing loss (differentiable)
    smooth: torch.Tensor    # scalar, smoothness regulariser (differentiable)
    counts: torch.Tensor    # (E,) top-k assignments per expert (no grad)
    top1: torch.Tensor      # (B, N) top-1 expert per token (no grad)


class Router(nn.Module):
    """Linear(dim, E, bias=False) with noise, optional smoothing, top-k and gate softmax.

    Parameter `weight`: (num_experts, dim).
    """

    def __init__(self, dim: int, num_experts: int, top_k: int, noise: float = 0.1,
                 smooth: bool = False, grid: int | None = None):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.noise = noise
        self.smooth = smooth
        self.grid = grid
        self.weight = nn.Parameter(torch.empty(num_experts, dim))
        nn.init.normal_(self.weight, std=0.02)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Routing logits before noise: (B, N, E), smoothed when smooth routing is on."""
        z = F.linear(x, self.weight)
        if self.smooth:
            z = smooth_logits(z, self.grid)
        return z

    def forward(self, x: torch.Tensor):
        """Returns (gates (B, N, k), idx (B, N, k) long, probs (B, N, E))."""
        z = self.logits(x)
        if self.training and self.noise > 0:
            z = z + torch.randn_like(z) * self.noise
        probs = torch.softmax(z, dim=-1)
        top, idx = z.topk(self.top_k, dim=-1)
        gates = torch.softmax(top, dim=-1)
        return gates, idx, probs

    def extra_repr(self) -> str:
        return (f"dim={self.weight.shape[1]}, experts={self.num_experts}, k={self.top_k}, "
                f"noise={self.noise}, smooth={self.smooth}")


class _MoEBase(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dim = cfg.dim
        self.ffn_dim = cfg.ffn_dim
        self.num_experts = cfg.num_experts
        self.top_k = cfg.top_k
        self.grid = cfg.grid
        self.router = Router(cfg.dim, cfg.num_experts, cfg.top_k, cfg.router_noise,
                             cfg.smooth_routing, cfg.grid)
        self.aux: RoutingAux | None = None

    def _route(self, x):
        gates, idx, probs = self.router(x)
        self.aux = RoutingAux(
            balance=load_balance_loss(probs, idx, self.num_experts),
            smooth=smoothness_loss(probs, self.grid),
            counts=torch.bincount(idx.reshape(-1), minlength=self.num_experts).detach(),
            top1=idx[..., 0].detach(),
        )
        return gates, idx


class ExpertGroups:
    """The (token, slot) rows of a layer sorted by expert, so that each expert's rows are one
    contiguous segment: `order` (stable argsort of the flat top-k indices), `counts` (rows of
    each expert), `token` (the token of each sorted row). The sort is made once per layer;
    `mix_experts` runs each expert on its segment and adds the result into its tokens' rows
    straight away, so no full-width tensor of all rows is built, sorted or unsorted."""

    def __init__(self, idx: torch.Tensor, num_experts: int, top_k: int):
        self.order = torch.argsort(idx, stable=True)
        self.counts = torch.bincount(idx, minlength=num_experts).tolist()
        self.token = self.order // top_k
        self.tokens = idx.numel() // top_k

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """x (tokens, d) -> the sorted rows (tokens * k, d): each token once per expert."""
        return x[self.token]

    def gates(self, gates: torch.Tensor) -> torch.Tensor:
        """gates (..., k) -> the gate of each sorted row, (tokens * k, 1)."""
        return gates.reshape(-1)[self.order].unsqueeze(1)

    def mix_experts(self, rows: torch.Tensor, experts, width: int,
                    gates: torch.Tensor | None = None) -> torch.Tensor:
        """(tokens, width): for each expert e, experts[e](its segment of the sorted rows)
        (times the rows' gates if given), added into the rows of their tokens.

        One segment at a time: its output is summed while it is still in cache, which beats
        concatenating all outputs and summing them with one scatter-add (1.1x the whole
        butterfly layer at dim 64, forward + backward). The adds happen in sorted-row order,
        so each token gets 0 + (its first row) + (its second): the same floats as summing
        the k rows in token order (k <= 2). Experts without rows run on an empty segment, so
        every weight stays in the graph (DDP)."""
        out = rows.new_zeros(self.tokens, width)
        segments = [torch.split(t, self.counts) for t in (rows, self.token)]
        row_gates = torch.split(gates, self.counts) if gates is not None else [None] * len(experts)
        for expert, xe, tokens, g in zip(experts, *segments, row_gates):
            y = expert(xe)
            out.index_add_(0, tokens, y if g is None else y * g)
        return out


def segment_linear(rows: torch.Tensor, counts: list, weight_t: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """rows (M, d) sorted by expert, counts[e] of expert e -> (M, f), each expert's segment
    times weight_t[e] (d, f) (+ bias[e]): one matmul a segment. A loop over the segments,
    as in common MoE code: CPU PyTorch has no grouped matmul, and a zero-padded batched
    matmul measured slower here. Experts with no rows run on an empty segment, so every
    weight stays in the graph (DDP)."""
    ws = weight_t.unbind(0)  # one backward op for all experts (indexing makes E zero-fills)
    bs = bias.unbind(0) if bias is not None else [None] * len(ws)
    return torch.cat([xe @ w if b is None else torch.addmm(b, xe, w)
                      for xe, w, b in zip(torch.split(rows, counts), ws, bs)])


def grouped_linear(rows: torch.Tensor, idx: torch.Tensor, weight_t: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """rows (M, d), idx (M,) expert of each row, weight_t (E, d, f), bias (E, f) or None
    -> (M, f) with row i = rows[i] @ weight_t[idx[i]] (+ bias[idx[i]]), in the rows' order.
    Rows are sorted by expert (argsort, no loop) for segment_linear and put back."""
    order = torch.argsort(idx, stable=True)
    counts = torch.bincount(idx, minlength=weight_t.shape[0]).tolist()
    ys = segment_linear(rows[order], counts, weight_t, bias)
    return torch.empty_like(ys).index_copy(0, order, ys)


def expert_slots(idx: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, int]:
    """(slot, cap): cap = the most rows any expert has; row i goes to slot[i] =
    idx[i] * cap + (how many earlier rows share its expert), so the slots of expert e are
    e*cap .. e*cap + cap - 1 of an (E * cap)-row table."""
    counts = torch.bincount(idx, minlength=num_experts)
    cap = int(counts.max()) if idx.numel() else 0
    order = torch.argsort(idx, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    sorted_idx = idx[order]
    rank = torch.arange(idx.numel(), device=idx.device) - starts[sorted_idx]
    slot = torch.empty_like(idx)
    slot[order] = sorted_idx * cap + rank
    return slot, cap


def block_rotate(x: torch.Tensor, slot: torch.Tensor, cap: int,
                 blocks: torch.Tensor) -> torch.Tensor:
    """Row i of x (M, n) times the block-diagonal B of its expert, blocks (E, n_pad/bs, bs, bs)
    as butterfly_blocks gives them. The rows go to their slots of a zero table (E, cap, n_pad),
    every (expert, block) pair is one small matmul of one batched matmul, and the rows come
    back from their slots (empty slots hold zeros and are never read)."""
    e, nb, bs, _ = blocks.shape
    n = x.shape[1]
    if nb * bs != n:
        x = F.pad(x, (0, nb * bs - n))
    table = x.new_zeros(e * cap, nb * bs).index_copy(0, slot, x)
    y = torch.einsum("ecbi,ebri->ecbr", table.view(e, cap, nb, bs), blocks)
    return y.reshape(e * cap, nb * bs)[slot, :n]


# The expert paths' cost model (ButterflyMoE.choose_impl). All three paths multiply every row
# by the one shared Q(W_in) (rows * dim * ffn multiply-adds, the same in each), so only what
# differs is counted, in multiply-adds of a batched matmul:
#   grouped:  form the E matrices, two block contractions: 2 * E * ffn_pad * dim_pad * bs
#   slots:    block rotations on the (E, cap) slot table:   E * cap * (dim_pad + ffn_pad) * bs
#             (with the C kernels on the rows themselves, no table: rows in place of E * cap)
#   factored: per-row stages with gathered angles: FACTORED_STAGE_COST * rows * (dim_pad +
#             ffn_pad) * n_l (elementwise, about 30 multiply-adds each, forward + backward)
# bs = 2**n_l; cap = the most rows routed to one expert (the slot table's padding grows with
# imbalance: factored wins only when cap is many times the mean). Fitted on a 2-core CPU
# (benchmarks/train_speed.py): grouped wins at dim 64 / ffn 256 / 8,192 rows, slots at dim 256 /
# ffn 1,024 / 2,048 rows, where forming the matrices costs as much as the shared product. The
# C kernels make both cheaper (grouped 0.85x and 0.4x at those shapes, slots 0.7x and 0.75x)
# and leave both choices as they were.
FACTORED_STAGE_COST = 30
# Above this block size "grouped" forms the matrices stage by stage (expert_matrices_t).
MAX_FORM_BLOCK = 32


def expert_path_costs(rows: int, cap: int, experts: int, dim: int, ffn: int,
                      n_stages: int, slot_table: bool = True) -> dict[str, int]:
    """The cost model above: path name -> relative cost of one forward + backward;
    slot_table False: "slots" runs on the rows by the C kernel (no padding)."""
    bs = 1 << n_stages
    dp, fp = padded_size(dim), padded_size(ffn)
    form = bs if bs <= MAX_FORM_BLOCK else FACTORED_STAGE_COST * n_stages
    return {"grouped": 2 * experts * fp * dp * form,
            "slots": (experts * cap if slot_table else rows) * (dp + fp) * bs,
            "factored": FACTORED_STAGE_COST * rows * (dp + fp) * n_stages}


class ButterflyMoE(_MoEBase):
    """ButterflyViT feed-forward (docs/architecture.md).

    Parameters:
      router.weight   (E, dim)
      w_in.weight     (ffn_dim, dim)      latent float of the shared ternary substrate
      phi             (E, n_l, dim_pad/2)     input-side angles, applied first (on dim)
      theta           (E, n_l, ffn_pad/2)     output-side angles (on ffn_dim)
      w_out.weight    (dim, ffn_dim)      latent float of the shared ternary output projection
      w_out.bias      (dim,)
    For token x and its top-k experts e with gates g_e:
      h_e = ReLU( B(theta_e) Q(W_in) B(phi_e) x )
      y   = Q(W_out) (sum_e g_e h_e) + b_out

    Three computations of the same function (tests check they agree in value and gradient);
    impl "auto" (default) takes the cheapest by the cost model above, per call:
    - "factored" (the device's order, never forms W_e): every (token, slot) row gathers its
      expert's cos/sin, is rotated by B(phi_e), multiplied by the one shared Q(W_in), and
      rotated by B(theta_e). Per-row gathers and elementwise stages: slow on a CPU.
    - "slots": with n_l stages B is block diagonal (blocks of bs = 2**n_l); each row is
      rotated by its expert's blocks, all rows are multiplied by the shared Q(W_in) together,
      and rotated again. The C kernel (train_kernels.block_rows) works on the rows sorted by
      expert, where they lie; without it, rows are put in a per-expert slot table and rotated
      in one batched matmul (block_rotate).
    - "grouped": the E expert matrices W_e = B(theta_e) Q(W_in) B(phi_e) are formed from the
      angles and the substrate (E*ffn*dim floats, transient, never stored or exported; by
      the C kernel where it runs, expert_matrices_t), rows are grouped by expert and
      multiplied (ExpertGroups). Cheap while E*ffn*dim is small next to the rows' work.
    kernels=False keeps to PyTorch ops (the C kernels' share in benchmarks/train_speed.py).
    """

    IMPLS = ("grouped", "slots", "factored")
    FORMS = ("kernel", "blocks", "stages")

    def __init__(self, cfg, impl: str = "auto", kernels: bool = True):
        super().__init__(cfg)
        if impl != "auto" and impl not in self.IMPLS:
            raise ValueError(f"impl must be 'auto' or one of {self.IMPLS}, got {impl!r}")
        n_l = cfg.butterfly_stages
        check_stages(cfg.dim, n_l)
        check_stages(cfg.ffn_dim, n_l)
        self.n_stages = n_l
        self.impl = impl
        self.kernels = kernels              # the C training kernels where they can run
        self.last_impl: str | None = None   # the path the last forward took
        self.w_in = TernaryLinear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w_out = TernaryLinear(cfg.ffn_dim, cfg.dim, bias=True)
        self.register_buffer("phi_mask", angle_mask(cfg.dim, n_l), persistent=False)
        self.register_buffer("theta_mask", angle_mask(cfg.ffn_dim, n_l), persistent=False)
        self.phi = nn.Parameter(init_angles(cfg.num_experts, cfg.dim, n_l))
        self.theta = nn.Parameter(init_angles(cfg.num_experts, cfg.ffn_dim, n_l))

    def choose_impl(self, rows: int, cap: int) -> str:
        """The cheapest path for `rows` routed rows, at most `cap` of them on one expert."""
        costs = expert_path_costs(rows, cap, self.num_experts, self.dim, self.ffn_dim,
                                  self.n_stages, slot_table=not self.uses_kernels())
        return min(self.IMPLS, key=costs.__getitem__)   # ties: the earlier in IMPLS

    def _angles(self):
        phi = self.phi * self.phi_mask
        theta = self.theta * self.theta_mask
        return torch.cos(phi), torch.sin(phi), torch.cos(theta), torch.sin(theta)

    def expert_hidden_factored(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """h = ReLU(B(theta_e) Q(W_in) B(phi_e) x) for rows x (M, dim), experts idx (M,)."""
        cp, sp, ct, st = self._angles()
        h = butterfly(x, cp[idx], sp[idx])
        h = F.linear(h, self.w_in.quantized_weight())
        h = butterfly(h, ct[idx], st[idx])
        return F.relu(h)

    def uses_kernels(self) -> bool:
        """The C training kernels (train_kernels.py) run this layer's butterflies: allowed
        (self.kernels), and they can (float32 on the CPU, a C compiler at hand)."""
        return self.kernels and train_kernels.usable_for(self.phi, self.theta,
                                                         self.w_in.weight)

    def form_method(self, method: str | None = None) -> str:
        """How expert_matrices_t forms the matrices: `method`, else the C kernel where it
        runs (uses_kernels), else "blocks" while 2**n_l <= MAX_FORM_BLOCK, else "stages"."""
        if method:
            return method
        if self.uses_kernels():
            return "kernel"
        return "blocks" if (1 << self.n_stages) <= MAX_FORM_BLOCK else "stages"

    def expert_weights_t(self, method: str | None = None) -> list[torch.Tensor]:
        """Each expert's W_e^T, (dim, ffn_dim): E tensors (the grouped path's weights). The
        kernel makes them as separate tensors, so each expert's gradient goes back on its
        own; the other methods unbind expert_matrices_t."""
        method = self.form_method(method)
        if method != "kernel":
            return list(self.expert_matrices_t(method).unbind(0))
        q = self.w_in.quantized_weight()                       # (f, d)
        f, d = self.ffn_dim, self.dim
        phi, theta = self.phi * self.phi_mask, self.theta * self.theta_mask
        fpad, dpad = 2 * theta.shape[-1], 2 * phi.shape[-1]
        if (fpad, dpad) != (f, d):
            q = F.pad(q, (0, dpad - d, 0, fpad - f))
        ws = train_kernels.form_expert_matrices_t(q, phi, theta)
        # sliced only when padded: the backward of any slice, even a whole one, builds a
        # zero tensor of the full size and copies the gradient in
        return [w[:d, :f] for w in ws] if (fpad, dpad) != (f, d) else list(ws)

    def expert_matrices_t(self, method: str | None = None) -> torch.Tensor:
        """W_e^T for all experts, (E, dim, ffn_dim): W_e^T = (B(theta_e) Q B(phi_e))^T.

        Three computations of the same matrices (tests check values and gradients agree):
        "kernel": the C kernel (train_kernels.py), every expert's stages in cache, forward and
        backward. "blocks": B is block diagonal with blocks of 2**n_l, so W_e =
        blocks(theta_e) . Q . blocks(phi_e) is two small batched contractions. "stages":
        rotate the rows/columns of Q stage by stage. Default: form_method()."""
        method = self.form_method(method)
        if method not in self.FORMS:
            raise ValueError(f"form must be one of {self.FORMS}, got {method!r}")
        if method == "kernel":
            return torch.stack(self.expert_weights_t(method))
        q = self.w_in.quantized_weight()                       # (f, d)
        e, f, d = self.num_experts, self.ffn_dim, self.dim
        cp, sp, ct, st = self._angles()
        bs = 1 << self.n_stages
        if method == "blocks":
            pp = butterfly_blocks(cp, sp)          # (E, db, bs, bs): [e, b, j, l] of B(phi_e)
            pt = butterfly_blocks(ct, st)          # (E, fb, bs, bs): [e, c, r, i] of B(theta_e)
            fpad, dpad = 2 * ct.shape[-1], 2 * cp.shape[-1]
            if (fpad, dpad) != (f, d):
                q = F.pad(q, (0, dpad - d, 0, fpad - f))
            fb, db = fpad // bs, dpad // bs
            # X_e^T = Q^T B(theta_e)^T, block column c at a time for all experts at once: one
            # (dpad, bs) x (bs, E*bs) product per c (the shared Q makes these big products)
            xt = torch.bmm(q.view(fb, bs, dpad).transpose(1, 2),
                           pt.permute(1, 3, 0, 2).reshape(fb, bs, e * bs))
            # [c, (b, j), (e, r)] -> X_e^T as [e, b, j, (c, r)]: the copy moves runs of bs
            # floats (the other order, X_e first, moved single floats: 1.2x slower to form)
            x = xt.view(fb, db, bs, e, bs).permute(3, 1, 2, 0, 4).reshape(e, db, bs, fpad)
            # W_e^T = B(phi_e)^T X_e^T, block column b at a time: (E, db) products of (bs, bs)
            # by (bs, fpad), written straight in the (E, dim, ffn) layout the products take
            w = torch.matmul(pp.transpose(-1, -2), x).reshape(e, dpad, fpad)
            # sliced only when padded (expert_weights_t says why)
            return w if (fpad, dpad) == (f, d) else w[:, :d, :f]
        # rows of Q B(phi_e) are B(phi_e)^T applied to the rows of Q
        qb = butterfly(q.expand(e, *q.shape), cp[:, None], sp[:, None], transpose=True)
        # columns of B(theta_e) (Q B(phi_e)): rotate the rows of its transpose
        return butterfly(qb.transpose(1, 2), ct[:, None], st[:, None])  # (E, d, f)

    def expert_hidden_grouped(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.relu(grouped_linear(x, idx, self.expert_matrices_t()))

    def expert_hidden_slots(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The factored order, each rotation as its expert's diagonal blocks: on rows sorted
        by expert by the C kernel (expert_hidden_sorted), else in a slot table
        (block_rotate)."""
        if self.uses_kernels():
            order = torch.argsort(idx, stable=True)
            counts = torch.bincount(idx, minlength=self.num_experts).tolist()
            h = self.expert_hidden_sorted(x[order], counts)
            return torch.empty_like(h).index_copy(0, order, h)
        cp, sp, ct, st = self._angles()
        pp = butterfly_blocks(cp, sp)                      # (E, dpad/bs, bs, bs)
        pt = butterfly_blocks(ct, st)                      # (E, fpad/bs, bs, bs)
        slot, cap = expert_slots(idx, self.num_experts)
        h = block_rotate(x, slot, cap, pp)
        h = F.linear(h, self.w_in.quantized_weight())
        return F.relu(block_rotate(h, slot, cap, pt))

    def expert_hidden_sorted(self, rows: torch.Tensor, counts: list) -> torch.Tensor:
        """h for rows sorted by expert (counts[e] rows of expert e), each rotation as its
        expert's diagonal blocks applied to the rows where they lie (the C kernel's
        block_rows), the shared Q(W_in) one product for all rows."""
        cp, sp, ct, st = self._angles()
        starts = train_kernels.segment_starts(counts)
        d, f = self.dim, self.ffn_dim
        dpad, fpad = 2 * cp.shape[-1], 2 * ct.shape[-1]
        h = rows if dpad == d else F.pad(rows, (0, dpad - d))
        h = train_kernels.block_rows(h, butterfly_blocks(cp, sp), starts)
        h = F.linear(h if dpad == d else h[:, :d], self.w_in.quantized_weight())
        h = h if fpad == f else F.pad(h, (0, fpad - f))
        h = train_kernels.block_rows(h, butterfly_blocks(ct, st), starts)
        return F.relu(h if fpad == f else h[:, :f])

    def path_for(self, idx: torch.Tensor, impl: str | None = None) -> str:
        """The path rows routed to experts idx (M,) take: `impl` (default self.impl), "auto"
        asking the cost model; recorded in last_impl."""
        impl = impl or self.impl
        if impl == "auto":
            cap = int(torch.bincount(idx, minlength=self.num_experts).max()) if idx.numel() else 0
            impl = self.choose_impl(idx.numel(), cap)
        self.last_impl = impl
        return impl

    def expert_hidden(self, x: torch.Tensor, idx: torch.Tensor, impl: str | None = None):
        """h for rows x (M, dim) routed to experts idx (M,), on path `impl` (default self.impl;
        "auto" asks the cost model)."""
        impl = self.path_for(idx, impl)
        if impl == "factored":
            return self.expert_hidden_factored(x, idx)
        if impl == "slots":
            return self.expert_hidden_slots(x, idx)
        if impl == "grouped":
            return self.expert_hidden_grouped(x, idx)
        raise ValueError(f"impl must be 'auto' or one of {self.IMPLS}, got {impl!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        gates, idx = self._route(x)
        k = self.top_k
        flat = idx.reshape(-1)
        impl = self.path_for(flat)
        sorted_slots = impl == "slots" and self.uses_kernels()
        if impl == "grouped" or sorted_slots:
            # Rows stay sorted by expert from the gather to the mixture (ExpertGroups), and
            # the gate scales the row before its expert, g ReLU(W x) = ReLU(W (g x)) as g >= 0:
            # a multiply at width dim instead of ffn_dim (forward and backward).
            groups = ExpertGroups(flat, self.num_experts, k)
            rows = groups.rows(x.reshape(b * n, d)) * groups.gates(gates)
            if sorted_slots:   # every row at once: one shared product, one scatter-add
                h = self.expert_hidden_sorted(rows, groups.counts)
                mixed = h.new_zeros(b * n, self.ffn_dim).index_add_(0, groups.token, h)
            else:
                experts = [partial(_relu_matmul, weight_t=w) for w in self.expert_weights_t()]
                mixed = groups.mix_experts(rows, experts, self.ffn_dim)
        else:
            rows = x.reshape(b * n, 1, d).expand(b * n, k, d).reshape(b * n * k, d)
            h = self.expert_hidden(rows, flat, impl)
            mixed = (h.reshape(b * n, k, self.ffn_dim) * gates.reshape(b * n, k, 1)).sum(1)
        return self.w_out(mixed).reshape(b, n, d)


class StandardMoE(_MoEBase):
    """Standard MoE baseline: E independent float experts Linear-ReLU-Linear.

    Parameters: router.weight (E, dim); w1 (E, ffn_dim, dim); b1 (E, ffn_dim);
    w2 (E, dim, ffn_dim); b2 (E, dim). y = sum_e g_e (W2_e ReLU(W1_e x + b1_e) + b2_e).
    Rows are sorted by expert once (ExpertGroups); each expert runs on its segment and its
    output is added into its tokens' rows, as in ButterflyMoE's "grouped" path.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        e, d, f = cfg.num_experts, cfg.dim, cfg.ffn_dim
        self.w1 = nn.Parameter(torch.empty(e, f, d))
        self.b1 = nn.Parameter(torch.zeros(e, f))
        self.w2 = nn.Parameter(torch.empty(e, d, f))
        self.b2 = nn.Parameter(torch.zeros(e, d))
        for i in range(e):  # same init as nn.Linear's weight, per expert
            nn.init.kaiming_uniform_(self.w1.data[i], a=5 ** 0.5)
            nn.init.kaiming_uniform_(self.w2.data[i], a=5 ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        gates, idx = self._route(x)
        groups = ExpertGroups(idx.reshape(-1), self.num_experts, self.top_k)
        experts = [partial(_expert_mlp, w1=w1, b1=b1, w2=w2, b2=b2) for w1, b1, w2, b2 in zip(
            self.w1.transpose(1, 2).unbind(0), self.b1.unbind(0),
            self.w2.transpose(1, 2).unbind(0), self.b2.unbind(0))]
        y = groups.mix_experts(groups.rows(x.reshape(b * n, d)), experts, d,
                               groups.gates(gates))
        return y.reshape(b, n, d)


def _relu_matmul(x, weight_t):
    return F.relu(x @ weight_t)


def _expert_mlp(x, w1, b1, w2, b2):
    return torch.addmm(b2, F.relu(torch.addmm(b1, x, w1)), w2)


class DenseFFN(nn.Module):
    """Plain ViT feed-forward: fc1 (ffn_dim, dim) + bias, ReLU, fc2 (dim, ffn_dim) + bias."""

    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.dim)
        self.aux = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


FFN_CLASSES = {"butterfly": ButterflyMoE, "moe": StandardMoE, "dense": DenseFFN}
