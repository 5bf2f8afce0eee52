"""Model configuration shared by training, packing, the integer reference and the board.

The architecture (decisions recorded in docs/architecture.md):
- patches of `patch_size` x `patch_size` x `in_channels`, flattened channel-major
  (c, row, col), embedded by one linear layer, plus a learned position embedding;
- `depth` pre-LN blocks: LayerNorm -> multi-head self-attention -> residual,
  LayerNorm -> feed-forward -> residual;
- mean pooling over patch tokens (no class token), LayerNorm, linear head.

Feed-forward kinds (`ffn`):
- "butterfly": ButterflyViT. One shared ternary substrate W_in (ffn_dim x dim) per layer;
  expert e computes h_e = B(theta_e) Q(W_in) B(phi_e) x, then ReLU; the top-k experts'
  outputs are mixed by their gates and sent through one shared ternary output
  projection W_out (dim x ffn_dim) with a bias. The shared projection is counted in
  every memory figure we print beside the paper's own accounting.
- "moe": standard MoE with independent float experts (Linear-ReLU-Linear each).
- "dense": a plain ViT feed-forward (Linear-ReLU-Linear).
"""

from dataclasses import asdict, dataclass, fields

FFN_KINDS = ("butterfly", "moe", "dense")


@dataclass
class ModelConfig:
    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 4
    num_classes: int = 10
    dim: int = 64
    depth: int = 4
    heads: int = 4
    ffn_dim: int = 256
    ffn: str = "butterfly"
    num_experts: int = 8
    top_k: int = 2
    butterfly_stages: int = 4  # n_l; at most log2 of the padded dimension
    router_noise: float = 0.1  # std of the Gaussian noise on router logits while training
    smooth_routing: bool = False  # route on logits averaged over the 4-neighbourhood

    def __post_init__(self):
        if self.ffn not in FFN_KINDS:
            raise ValueError(f"ffn must be one of {FFN_KINDS}, got {self.ffn!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.ffn != "dense" and not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k must be in 1..num_experts ({self.num_experts}), got {self.top_k}")
        if self.ffn == "butterfly":
            for what, n in (("dim", self.dim), ("ffn_dim", self.ffn_dim)):
                most = max(n - 1, 1).bit_length()  # log2 of n padded to a power of two
                if not 0 <= self.butterfly_stages <= most:
                    raise ValueError(f"butterfly_stages must be in 0..{most} for {what} {n}, "
                                     f"got {self.butterfly_stages}")

    @property
    def grid(self) -> int:
        """Patches per side of the square patch grid."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.patch_size * self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)
