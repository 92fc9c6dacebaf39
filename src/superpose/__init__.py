"""Superposition in Transformers: blend a frozen base LM and its fine-tune layer by layer, keeping both skills."""
from .modeling import SuperposedConfig, SuperposedModel
from .settings import ModelSettings, TrainSettings, preset_settings
from .training import train

__all__ = ["SuperposedConfig", "SuperposedModel", "ModelSettings", "TrainSettings", "preset_settings", "train"]
__version__ = "0.1.0"
