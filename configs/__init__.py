"""Hydra configs shipped inside the package (srlab.configs); `configs/` in the repository is the same folder."""
