"""Lightning callbacks used by srlab runs."""

from srlab.callbacks.images import ComparisonImages

__all__ = ["ComparisonImages"]
