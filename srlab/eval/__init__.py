"""Evaluation: benchmark matrix, paper tables, tiled / self-ensemble inference, figures."""
