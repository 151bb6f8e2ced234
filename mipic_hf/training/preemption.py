"""Preemption: SIGTERM or SIGINT during training stops at the end of the current optimizer step with a full
checkpoint (model, optimizer, scheduler, RNG, auxiliary modules, the data position in ``trainer_state.json``),
so a preempted job loses at most one step and ``--resume_from_checkpoint`` continues exactly."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: a temporary failure, run again (resume from the checkpoint)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(RuntimeError):
    """Training stopped on a signal after saving ``checkpoint`` at ``step``."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        super().__init__(
            f"stopped by {signal_name} at step {step}; checkpoint saved in {checkpoint}; "
            f"resume with --resume_from_checkpoint {checkpoint}"
        )
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


class PreemptionCallback(TrainerCallback):
    """Catches SIGTERM / SIGINT while training (main thread only) and asks the Trainer to save a checkpoint and
    stop at the next step end; the previous handlers come back when training ends. Under torchrun every rank
    receives the signal, so every rank stops at the same step."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.step: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.received is not None and self.step is None:
            self.step = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def check(self, output_dir: str) -> None:
        """Raise :class:`Preempted` when training stopped on a signal (after the Trainer saved the checkpoint)."""
        if self.step is not None:
            checkpoint = Path(output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.step}"
            raise Preempted(signal.Signals(self.received).name, self.step, checkpoint)
