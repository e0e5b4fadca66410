"""The UniFusOD network: config, backbone, neck, FRA, fusion head, detection head, builder."""

from .config import ModelConfig, ModelConfigError, load_model_config
from .unifusod import TASKS, UniFusOD, build_model

__all__ = [
    "TASKS",
    "ModelConfig",
    "ModelConfigError",
    "UniFusOD",
    "build_model",
    "load_model_config",
]
