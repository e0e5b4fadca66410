"""Evaluation metrics: image-fusion quality (`fusion`) and detection AP (`detection`)."""

from fusion_training.metrics.fusion import METRIC_NAMES, PRESETS, MetricConfig, evaluate_fusion

__all__ = ["METRIC_NAMES", "PRESETS", "MetricConfig", "evaluate_fusion"]
