"""The vision transformer around the feed-forward kinds (docs/architecture.md).

    patches (B, N, C*p*p) channel-major  -> patch_embed (Linear) + pos_embed
    depth x [ x + attn(norm1(x)) ; x + ffn(norm2(x)) ]        pre-LN blocks
    mean over the N patch tokens -> norm -> head

Input: float images (B, C, H, W) already normalised ((p/255 - mean)/std per channel).
"""

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .moe import FFN_CLASSES, neighbour_agreement


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C*patch*patch); tokens in row-major grid order, each patch
    vector flattened channel-major (c, row, col)."""
    b, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    x = images.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, gh * gw, c * patch * patch)


class Attention(nn.Module):
    """Multi-head self-attention. qkv.weight (3*dim, dim) + bias: output rows [0, dim) are
    q, [dim, 2dim) k, [2dim, 3dim) v; head h uses columns h*hd..(h+1)*hd-1 of each
    (hd = dim/heads). softmax(q k^T / sqrt(hd)) v, heads concatenated, then proj (dim, dim)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        hd = d // self.heads
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.ffn = FFN_CLASSES[cfg.ffn](cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class ViT(nn.Module):
    """Parameters: patch_embed (dim, C*p*p) + bias; pos_embed (N, dim); blocks.i.{norm1,
    attn.qkv, attn.proj, norm2, ffn.*}; norm (dim); head (classes, dim) + bias."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.dim)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.num_patches, cfg.dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def forward(self, images: torch.Tensor, return_aux: bool = False):
        x = self.patch_embed(patchify(images, self.cfg.patch_size)) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.norm(x.mean(dim=1)))
        if return_aux:
            return logits, self.routing_aux()
        return logits

    def moe_layers(self):
        return [b.ffn for b in self.blocks if hasattr(b.ffn, "router")]

    def routing_aux(self) -> dict:
        """Aggregate of the last forward's routing: 'balance' and 'smooth' (means over MoE
        layers, differentiable; 0 for dense), 'counts' (layers, E), 'top1' list of (B, N)."""
        auxes = [b.ffn.aux for b in self.blocks if getattr(b.ffn, "aux", None) is not None]
        if not auxes:
            zero = self.head.weight.new_zeros(())
            return {"balance": zero, "smooth": zero, "counts": None, "top1": []}
        return {
            "balance": torch.stack([a.balance for a in auxes]).mean(),
            "smooth": torch.stack([a.smooth for a in auxes]).mean(),
            "counts": torch.stack([a.counts for a in auxes]),
            "top1": [a.top1 for a in auxes],
        }

    def set_smooth_routing(self, on: bool) -> None:
        """Switch smoothed routing on/off in every router (e.g. to evaluate its effect)."""
        self.cfg.smooth_routing = on
        for layer in self.moe_layers():
            layer.router.smooth = on


def routing_stats(counts: torch.Tensor) -> dict:
    """Utilisation of (layers, E) assignment counts: per-layer share of assignments,
    effective experts exp(entropy) / E, and fraction of experts used at all."""
    counts = counts.double()
    share = counts / counts.sum(-1, keepdim=True).clamp_min(1)
    ent = -(share * share.clamp_min(1e-12).log()).sum(-1)
    e = counts.shape[-1]
    eff = ent.exp() / e
    used = (counts > 0).double().mean(-1)
    return {
        "effective_experts_frac": eff.tolist(),
        "used_experts_frac": used.tolist(),
        "max_share": share.max(-1).values.tolist(),
        "mean_effective_experts_frac": float(eff.mean()),
        "mean_used_experts_frac": float(used.mean()),
    }


__all__ = ["ViT", "patchify", "routing_stats", "neighbour_agreement"]
