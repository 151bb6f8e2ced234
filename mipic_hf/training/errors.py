"""What a run stops with when training diverges (not knowable before the work): the CLI prints one line, exit 1."""

from __future__ import annotations


class NonFiniteLossError(RuntimeError):
    """The loss, the weights after training, or the trained model's embeddings became NaN or inf (see
    ``stop_on_nonfinite_loss``)."""
