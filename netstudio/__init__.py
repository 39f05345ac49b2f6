"""NetStudio: a visual neural-network builder for PyTorch."""

__version__ = "0.1.0"
