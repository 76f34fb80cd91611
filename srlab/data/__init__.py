"""Data: MATLAB-exact bicubic degradation, image IO, datasets and LightningDataModules."""
