"""Networks (torch): ShuffleNet V2 backbones, heads, the factory, model files and the torch predictor.

One file per concern: ``shufflenet.py`` (backbone) and ``heads.py`` (heads) hold the blocks,
``factory.py`` builds a network by name, ``checkpoint.py`` saves and loads model files,
``padding.py`` makes the exact inference copy that export runs, ``predictor.py`` runs a model
behind the Predictor protocol.
"""
from __future__ import annotations

from lightmark.core.errors import ModelConfigError, ModelFileError, ModelRuleError
from lightmark.models.checkpoint import MAX_MODEL_BYTES, check_model_rules, load_model, save_model
from lightmark.models.factory import (BACKBONES, HEADS, LandmarkModel, build_model, check_model_config,
                                      count_macs, model_info, register_backbone, register_head,
                                      saved_state)
from lightmark.models.heads import ATTENTIONS, HEAD_BLOCKS, soft_argmax
from lightmark.models.predictor import TorchPredictor

__all__ = [
    "ATTENTIONS", "BACKBONES", "HEADS", "HEAD_BLOCKS", "MAX_MODEL_BYTES", "LandmarkModel",
    "ModelConfigError", "ModelFileError", "ModelRuleError", "TorchPredictor", "build_model",
    "check_model_config", "check_model_rules", "count_macs", "load_model", "model_info",
    "register_backbone", "register_head", "save_model", "saved_state", "soft_argmax",
]
