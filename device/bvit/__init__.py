"""ButterflyViT on the board: model loader, patch extraction, integer kernels, classifier."""

__version__ = "0.1.0"
