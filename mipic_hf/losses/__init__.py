"""MIPIC loss terms, one module per term of the paper, plus the baselines trained side by side."""

from .base import EncodedText, MatryoshkaObjective, check_objective
from .cka import linear_cka
from .mipic import PRESETS, MIPICLoss
from .mrl import MRLLoss
from .pic import PICLoss
from .sia import SIALoss, topk_token_masks
from .starbucks import StarbucksLoss
from .task import MatryoshkaTaskLoss
from .twodmse import TwoDMSELoss

__all__ = [
    "PRESETS",
    "EncodedText",
    "MIPICLoss",
    "MRLLoss",
    "MatryoshkaObjective",
    "MatryoshkaTaskLoss",
    "PICLoss",
    "SIALoss",
    "StarbucksLoss",
    "TwoDMSELoss",
    "check_objective",
    "linear_cka",
    "topk_token_masks",
]
