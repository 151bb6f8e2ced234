"""Checkpoints written whole or not at all.

The Trainer writes ``checkpoint-N`` in place, file after file, then deletes the checkpoints beyond
``save_total_limit``: a kill -9 in between leaves a ``checkpoint-N`` that ``get_last_checkpoint`` picks and
that fails to load (or loads without its optimizer or auxiliary modules), possibly with the older complete
one already deleted. :class:`AtomicCheckpoints` makes the Trainer write the whole checkpoint (every rank's
files, then :meth:`~AtomicCheckpoints.write_extra_checkpoint_files`) into ``<output_dir>/.checkpoint-staging/``
and only then renames it to ``checkpoint-N`` (one ``os.replace`` on the same filesystem) and rotates. At any
instant the output folder holds the previous complete checkpoints and, at most, the new complete one; a
staging folder left by a kill is removed by the next save and matched by nothing that loads checkpoints.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy, rotate_checkpoints

from ..hub.folders import replace_folder

STAGING_DIR = ".checkpoint-staging"


class AtomicCheckpoints(Trainer):
    """A Trainer whose ``_save_checkpoint`` publishes a checkpoint only once it is complete.

    Not for ``push_to_hub`` with ``hub_strategy`` ``checkpoint`` / ``all_checkpoints``: the Trainer uploads
    those from the checkpoint folder in the background, so they are written in place as the Trainer does.
    """

    def write_extra_checkpoint_files(self, folder: str) -> None:
        """Called on the main process with the staged checkpoint folder, before it is published."""

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = self._get_output_dir(trial=trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.push_to_hub and self.args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                self.write_extra_checkpoint_files(os.path.join(run_dir, name))
            return
        staging = os.path.join(run_dir, STAGING_DIR)
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed save left
        self.accelerator.wait_for_everyone()
        self._get_output_dir = lambda trial: staging  # the Trainer's own writes (and its rotation) go there
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        staged, final = os.path.join(staging, name), os.path.join(run_dir, name)
        if self.args.should_save:
            self._point_state_at(staged, final)
            self.write_extra_checkpoint_files(staged)
        self.accelerator.wait_for_everyone()  # every rank's shards are in the staged folder
        if self.args.should_save:
            replace_folder(Path(staged), Path(final))  # the old one moves aside into the staging folder
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def _point_state_at(self, staged: str, final: str) -> None:
        """The best checkpoint is this one: record its published path (also in the staged trainer_state.json)."""
        if self.state.best_model_checkpoint == staged:
            self.state.best_model_checkpoint = final
            state_file = os.path.join(staged, "trainer_state.json")
            if os.path.isfile(state_file):
                self.state.save_to_json(state_file)
