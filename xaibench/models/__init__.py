"""Model loading (safe by default), xaibench's architectures, checkpoints and inspection.

Importing this package does not import torch; loading a model does. Models and data sit below the
library packages and above ``xaibench.core``; they never import jobs or the CLI.
"""

from xaibench.models.archs import ARCHITECTURES
from xaibench.models.checkpoint import save_checkpoint
from xaibench.models.formats import MODEL_FORMATS, LoadedModel, ModelSource, load_model
from xaibench.models.meta import ModelMeta
from xaibench.models.summary import summarize

__all__ = [
    "ARCHITECTURES",
    "MODEL_FORMATS",
    "LoadedModel",
    "ModelMeta",
    "ModelSource",
    "load_model",
    "save_checkpoint",
    "summarize",
]
