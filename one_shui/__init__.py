"""one_shui: One-Shot Unlearning of Personal Identities (1-SHUI) and MetaUnlearn, on PyTorch Lightning."""

__version__ = "0.1.0"
