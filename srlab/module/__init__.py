"""The LightningModule that trains and validates any srlab model."""
