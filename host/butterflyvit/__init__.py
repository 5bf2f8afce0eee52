"""ButterflyViT: Mixture-of-Experts vision transformers for microcontrollers.

Host side: training (PyTorch), quantisation and packing, the bit-exact integer
reference, memory/energy accounting and the serial harness.
"""

__version__ = "0.1.0"
