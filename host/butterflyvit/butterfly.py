"""Butterfly rotations: n_l stages of Givens rotations (the paper, arXiv 2603.06746; docs/architecture.md).

Stage l = 0..n_l-1 has stride s = 2**(l+1). The (padded) vector of length n_pad is split
into blocks of s; inside block b, element j (j < s/2) is paired with element j + s/2 and
the pair is rotated by its own angle a = angles[l, b*(s/2) + j]:

    y1 = cos(a)*x1 - sin(a)*x2
    y2 = sin(a)*x1 + cos(a)*x2

No permutations. Angle tensor layout per rotation: (n_l, n_pad/2).

Dimensions that are not a power of two are handled by zero-padding to n_pad (the next
power of two), rotating, and truncating back to n. Angles of pairs whose second element
falls in the padding (index >= n) are held at exactly 0 (`angle_mask`), so no energy leaks
into the padding and the truncated operator stays exactly orthogonal. Such angles are
stored (as zeros) so the layout is the same for every n.

The implementation is vectorised: one tensor operation per stage, none per element or
per expert. Angles may be shared, shape (n_l, n_pad/2), or given per row of x, shape
(N, n_l, n_pad/2) for x of shape (N, n): this is how every token is rotated by the angles
of the expert it was routed to.
"""

import math

import torch
from torch import nn


def padded_size(n: int) -> int:
    """The next power of two >= n (n itself when it is one)."""
    if n < 1:
        raise ValueError(f"dimension must be >= 1, got {n}")
    return 1 << (n - 1).bit_length()


def max_stages(n: int) -> int:
    """The largest n_l a butterfly on dimension n may have: log2 of the padded size."""
    return int(math.log2(padded_size(n)))


def check_stages(n: int, n_stages: int) -> None:
    if not 0 <= n_stages <= max_stages(n):
        raise ValueError(
            f"butterfly on dimension {n} (padded {padded_size(n)}) takes 0..{max_stages(n)} "
            f"stages, got {n_stages}")


def pair_indices(n_pad: int, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i1, i2) rotated by each angle of a stage, in angle order (n_pad/2 each)."""
    s = 2 << stage
    h = s // 2
    a = torch.arange(n_pad // 2)
    block, j = a // h, a % h
    i1 = block * s + j
    return i1, i1 + h


def angle_mask(n: int, n_stages: int) -> torch.Tensor:
    """Boolean (n_stages, n_pad/2): True where the angle's pair lies inside 0..n-1."""
    n_pad = padded_size(n)
    check_stages(n, n_stages)
    rows = [pair_indices(n_pad, l)[1] < n for l in range(n_stages)]
    if not rows:
        return torch.zeros(0, n_pad // 2, dtype=torch.bool)
    return torch.stack(rows)


def butterfly(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              transpose: bool = False) -> torch.Tensor:
    """Apply B (or B^T with transpose=True) to the last dimension of x.

    x: (..., n). cos, sin: (n_l, n_pad/2) shared, or (*lead, n_l, n_pad/2) per row where
    lead broadcasts against x.shape[:-1]. Returns (..., n).
    Angles of padded pairs must be zero (see angle_mask) for B to be orthogonal.
    """
    n = x.shape[-1]
    n_l, half = cos.shape[-2], cos.shape[-1]
    if n_l == 0:
        return x
    n_pad = 2 * half
    if n_pad < n or n_pad != padded_size(n):
        raise ValueError(f"angles for padded size {n_pad} do not fit dimension {n}")
    if n_pad != n:
        x = nn.functional.pad(x, (0, n_pad - n))
    order = reversed(range(n_l)) if transpose else range(n_l)
    for l in order:
        lead = x.shape[:-1]  # grows when per-row angles carry extra leading dimensions
        s = 2 << l
        h = s // 2
        xv = x.reshape(*lead, n_pad // s, 2, h)
        x1, x2 = xv[..., 0, :], xv[..., 1, :]
        c = cos[..., l, :]
        sn = sin[..., l, :]
        c = c.reshape(*c.shape[:-1], n_pad // s, h)
        sn = sn.reshape(*sn.shape[:-1], n_pad // s, h)
        if transpose:
            sn = -sn
        y1 = c * x1 - sn * x2
        y2 = sn * x1 + c * x2
        y = torch.stack((y1, y2), dim=-2)
        x = y.reshape(*y.shape[:-3], n_pad)
    return x[..., :n] if n_pad != n else x


def butterfly_matrix(angles: torch.Tensor, n: int) -> torch.Tensor:
    """The dense n x n matrix of B(angles) (for tests and reports only)."""
    eye = torch.eye(n, dtype=angles.dtype)
    # Row i of eye @ B^T is B e_i, so applying B to the rows of I gives B^T.
    return butterfly(eye, torch.cos(angles), torch.sin(angles)).T


def butterfly_blocks(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The diagonal blocks of B: with n_l stages, B is block diagonal with blocks of
    bs = 2**n_l. cos, sin: (..., n_l, n_pad/2) -> P (..., n_pad/bs, bs, bs) with
    B[b*bs + r, b*bs + i] = P[..., b, r, i].

    Built by doubling: after stages 0..l-1 every block of 2h = 2**(l+1) outputs is
    diag(M_a, M_b) of two h-blocks, and stage l (pairs t, t+h, angles c, s) makes it
        [[c * M_a, -s * M_b],
         [s * M_a,  c * M_b]]    (c, s scale the rows).
    About 2 * bs * n_pad multiplies, in n_l small steps (training forms these for every
    expert at every step, so this is on the hot path). The steps run with the leading
    (expert) index innermost, where every multiply is a contiguous run the CPU vectorises;
    the trailing layout made each one broadcast along runs of h (1.4x slower forward +
    backward at 64 experts, same values and gradients). The result is a permuted view."""
    n_l, half = cos.shape[-2], cos.shape[-1]
    n_pad, lead = 2 * half, cos.shape[:-2]
    # (..., n_l, half) -> (n_l, half, L), L = the leading dimensions flattened
    width = math.prod(lead)
    cos = cos.reshape(width, n_l, half).permute(1, 2, 0)
    sin = sin.reshape(width, n_l, half).permute(1, 2, 0)
    m = torch.ones(n_pad, 1, 1, width, dtype=cos.dtype, device=cos.device)
    for l in range(n_l):
        h = 1 << l
        groups = n_pad // (2 * h)
        c = cos[l].reshape(groups, h, 1, width)
        s = sin[l].reshape(groups, h, 1, width)
        pairs = m.reshape(groups, 2, h, h, width)
        m_a, m_b = pairs[:, 0], pairs[:, 1]
        m = torch.cat((torch.cat((c * m_a, -s * m_b), 2),
                       torch.cat((s * m_a, c * m_b), 2)), 1)
    bs = 1 << n_l
    return m.permute(3, 0, 1, 2).reshape(*lead, n_pad // bs, bs, bs)


def init_angles(num: int, n: int, n_stages: int, std: float = 0.02,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """num rotations' angles, N(0, std^2), padded pairs zero: (num, n_l, n_pad/2)."""
    mask = angle_mask(n, n_stages)
    a = torch.randn(num, *mask.shape, generator=generator) * std
    return a * mask


class ButterflyRotation(nn.Module):
    """One learned butterfly rotation of dimension n with n_stages stages.

    Parameter `angles`: (n_stages, n_pad/2). The ButterflyViT feed-forward keeps all its
    experts' angles in one tensor instead (see moe.ButterflyMoE); this module is the single
    rotation, for tests and for anyone who needs one.
    """

    def __init__(self, n: int, n_stages: int, std: float = 0.02):
        super().__init__()
        check_stages(n, n_stages)
        self.n = n
        self.n_stages = n_stages
        self.register_buffer("mask", angle_mask(n, n_stages), persistent=False)
        self.angles = nn.Parameter(init_angles(1, n, n_stages, std)[0])

    def forward(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        a = self.angles * self.mask
        return butterfly(x, torch.cos(a), torch.sin(a), transpose=transpose)

    def matrix(self) -> torch.Tensor:
        return butterfly_matrix(self.angles.detach() * self.mask, self.n)
