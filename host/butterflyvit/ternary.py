"""Ternary substrate: BitNet-b1.58-style per-row absmean quantiser with a straight-through
estimator (the paper, arXiv 2603.06746, after BitNet b1.58).

For a latent float matrix W (rows = outputs):
    gamma_r = max(mean_c |W[r, c]|, 1e-5)          (row sums order-independent: absmean_scale)
    T[r, c] = clamp(round(W[r, c] / gamma_r), -1, 1)      in {-1, 0, +1}
    Q(W)[r, c] = T[r, c] * gamma_r
Forward uses Q(W); backward passes the gradient to W unchanged (straight-through).
`round` is torch.round: halves go to the even neighbour, so |W/gamma| = 0.5 gives 0 and
1.5 gives 2 -> clamped to 1. The packer exports T (trits) and gamma (row scales).
"""

import math

import torch
from torch import nn

EPS = 1e-5


def absmean_scale(w: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-row scale gamma, shape (rows, 1), in w's dtype: the mean of |W| over each row.

    The row sums do not depend on the order of addition: |W| is cut to a fixed point (int64,
    one power-of-two step for the whole matrix, 2^-62 of the largest possible row sum, so no
    sum can overflow) and integers add exactly in any order. A float
    sum would depend on the order a vectorised reduction adds in (SIMD width, thread count),
    so another CPU could get a gamma one bit off and flip a trit at a rounding boundary; this
    gives the same gamma, hence the same trits, on every machine."""
    a = w.detach().abs().double()
    n = w.shape[-1]
    _, e = torch.frexp(a.amax() * n)                       # every row sum < 2^e
    step = torch.ldexp(torch.ones((), dtype=torch.float64), e - 62)
    total = torch.floor(a / step).to(torch.int64).sum(dim=-1, keepdim=True)
    return ((total.double() * step) / n).to(w.dtype).clamp_min(eps)


def ternarize(w: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(trits, gamma): trits in {-1, 0, 1} (same dtype as w), gamma (rows, 1)."""
    gamma = absmean_scale(w, eps)
    return torch.clamp(torch.round(w / gamma), -1, 1), gamma


def quantize_ste(w: torch.Tensor) -> torch.Tensor:
    """Q(W) in the forward pass, identity gradient to W in the backward pass."""
    t, gamma = ternarize(w.detach())
    q = t * gamma
    return w + (q - w).detach()


class TernaryLinear(nn.Module):
    """y = x Q(W)^T (+ b). Parameters `weight` (out, in) latent float, `bias` (out,) optional.

    trits() and scales() are what gets stored; the float latent weight is training state.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(in_features))

    def quantized_weight(self) -> torch.Tensor:
        return quantize_ste(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.quantized_weight(), self.bias)

    @torch.no_grad()
    def trits(self) -> torch.Tensor:
        return ternarize(self.weight)[0].to(torch.int8)

    @torch.no_grad()
    def scales(self) -> torch.Tensor:
        return absmean_scale(self.weight)[:, 0]

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"
