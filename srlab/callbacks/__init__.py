"""Lightning callbacks used by srlab runs (and the Hydra sweep-summary callback)."""

from srlab.callbacks.images import ComparisonImages
from srlab.callbacks.interrupt import InterruptCheckpoint
from srlab.callbacks.learning_curve import LearningCurve
from srlab.callbacks.metrics_file import MetricsFile
from srlab.callbacks.sweep_summary import SweepSummary

__all__ = ["ComparisonImages", "InterruptCheckpoint", "LearningCurve", "MetricsFile", "SweepSummary"]
