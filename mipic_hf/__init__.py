"""mipic-hf: train Matryoshka text embeddings with MIPIC and publish them to the Hugging Face Hub."""

from transformers import AutoConfig, AutoModel

from .configuration_mipic import MatryoshkaConfig
from .modeling_mipic import MatryoshkaModel, MatryoshkaModelOutput
from .training.trainer import MIPICTrainer, MIPICTrainingArguments

__version__ = "0.1.0"

# In-process Auto* resolution, and auto_map + code files written by save_pretrained so that a saved
# folder loads anywhere with AutoModel.from_pretrained(folder, trust_remote_code=True).
AutoConfig.register(MatryoshkaConfig.model_type, MatryoshkaConfig, exist_ok=True)
AutoModel.register(MatryoshkaConfig, MatryoshkaModel, exist_ok=True)
MatryoshkaConfig.register_for_auto_class()
MatryoshkaModel.register_for_auto_class("AutoModel")

__all__ = [
    "MIPICTrainer",
    "MIPICTrainingArguments",
    "MatryoshkaConfig",
    "MatryoshkaModel",
    "MatryoshkaModelOutput",
    "__version__",
]
