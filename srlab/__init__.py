"""srlab: train, evaluate, ablate and reproduce single-image super-resolution models."""

__version__ = "0.1.0"
