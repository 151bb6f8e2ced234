"""Evaluate Matryoshka embeddings on a grid of (exit layer, dimension) budgets.

- :mod:`.metrics`: ``STSSpearman``, ``ClassificationScores``, ``PairClassificationScores`` (``evaluate.Metric``
  subclasses, instantiated directly, offline).
- :mod:`.grid`: ``evaluate_grid`` (one encoding pass per task and exit layer), ``main_score``,
  ``average_main_score``.
- :mod:`.report`: ``write_outputs`` (JSON, markdown, PNG figures), ``markdown_table``, ``summary_lines``.
(The Trainer callback that runs the grid during training is ``mipic_hf.training.callback``.)
"""

from .grid import average_main_score, evaluate_grid, main_score
from .metrics import ClassificationScores, PairClassificationScores, STSSpearman, best_threshold_scores
from .report import markdown_table, summary_lines, write_outputs

__all__ = [
    "ClassificationScores",
    "PairClassificationScores",
    "STSSpearman",
    "average_main_score",
    "best_threshold_scores",
    "evaluate_grid",
    "main_score",
    "markdown_table",
    "summary_lines",
    "write_outputs",
]
