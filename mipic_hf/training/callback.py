"""A TrainerCallback that scores the model on a (layer, dimension) grid during training."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..evaluation.grid import average_main_score, check_tasks, dim_key, evaluate_grid, layer_key
from .unwrap import find_matryoshka_model


def grid_metrics(results: Mapping[str, Any], prefix: str = "eval", all_metrics: bool = False) -> dict[str, float]:
    """Flat log keys of grid results: ``{prefix}_{task}_{metric}_L{layer}_D{dim}`` + ``{prefix}_matryoshka_avg``.

    Only each task's main metric unless ``all_metrics``.
    """
    head = f"{prefix}_" if prefix else ""
    logs: dict[str, float] = {}
    for task, entry in results["tasks"].items():
        for layer in results["layers"]:
            for dim in results["dims"]:
                cell = entry["scores"][layer_key(layer)][dim_key(dim)]
                names = cell if all_metrics else [entry["main_metric"]]
                for name in names:
                    logs[f"{head}{task}_{name}_L{layer}_D{dim}"] = float(cell[name])
    if results["tasks"]:
        logs[f"{head}matryoshka_avg"] = average_main_score(results)
    return logs


class MatryoshkaEvalCallback(TrainerCallback):
    """Runs :func:`~mipic_hf.evaluation.grid.evaluate_grid` during training and logs one value per budget.

    Triggers: every Trainer evaluation (``on_evaluate``, when ``run_on_evaluate``) and, if ``eval_steps`` is
    set, every ``eval_steps`` optimizer steps (``on_step_end``); a step is never scored twice. Logged keys:
    ``eval_{task}_{metric}_L{layer}_D{dim}`` (main metric only unless ``all_metrics``) and
    ``eval_matryoshka_avg`` (the average main score over the grid).

    Where they go: appended to ``state.log_history`` (one entry per run); on ``on_evaluate`` also written
    into the Trainer's ``metrics`` dict (so ``trainer.evaluate()`` returns them and
    ``metric_for_best_model="matryoshka_avg"`` works). Set ``trainer=`` (or ``callback.trainer = trainer``) to
    route them through ``trainer.log`` instead, which also reaches the ``report_to`` integrations.
    The latest results are kept in ``self.last_results`` / ``self.last_metrics``.

    The grid runs on every process (sharded models need all ranks in the forward). ``encode`` puts the model
    in eval mode and restores its previous mode.
    """

    def __init__(
        self,
        tokenizer: Any,
        tasks: list[str] | str,
        dims: list[int] | None = None,
        layers: list[int] | None = None,
        max_samples: int | None = None,
        eval_steps: int | None = None,
        run_on_evaluate: bool = True,
        batch_size: int = 64,
        data_dir: str | None = None,
        all_metrics: bool = False,
        prefix: str = "eval",
        trainer: Any = None,
        benchmarks: Mapping[str, Any] | None = None,
        load_fn: Callable[..., Any] | None = None,
    ) -> None:
        if eval_steps is not None and (
            isinstance(eval_steps, bool) or not isinstance(eval_steps, int) or eval_steps < 1
        ):
            raise ValueError(f"eval_steps must be a positive integer or None, got {eval_steps!r}")
        self.tokenizer = tokenizer
        self.tasks = check_tasks(tasks, benchmarks)
        self.dims, self.layers = dims, layers
        self.max_samples = max_samples
        self.eval_steps = eval_steps
        self.run_on_evaluate = run_on_evaluate
        self.batch_size = batch_size
        self.data_dir = data_dir
        self.all_metrics = all_metrics
        self.prefix = prefix
        self.trainer = trainer
        self.benchmarks, self.load_fn = benchmarks, load_fn
        self.last_results: dict[str, Any] | None = None
        self.last_metrics: dict[str, float] = {}
        self._last_step: int | None = None

    def run(self, model: Any) -> dict[str, float]:
        """Score ``model`` on the grid now; returns (and keeps) the flat metrics dict."""
        model = find_matryoshka_model(model) or model
        self.last_results = evaluate_grid(
            model,
            self.tokenizer,
            self.tasks,
            dims=self.dims,
            layers=self.layers,
            batch_size=self.batch_size,
            max_samples=self.max_samples,
            data_dir=self.data_dir,
            show_progress_bar=False,
            benchmarks=self.benchmarks,
            load_fn=self.load_fn,
        )
        self.last_metrics = grid_metrics(self.last_results, self.prefix, self.all_metrics)
        return self.last_metrics

    def _run_and_log(self, state: TrainerState, model: Any) -> dict[str, float]:
        if self._last_step == state.global_step and self.last_metrics:
            return self.last_metrics  # already scored at this step (on_step_end, or several eval datasets)
        if model is None:
            raise ValueError("MatryoshkaEvalCallback needs the model (kwargs['model'] from the Trainer)")
        metrics = self.run(model)
        self._last_step = state.global_step
        if self.trainer is not None:
            self.trainer.log(dict(metrics))
        else:
            entry = dict(metrics)
            if state.epoch is not None:
                entry["epoch"] = state.epoch
            entry["step"] = state.global_step
            state.log_history.append(entry)
        return metrics

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.eval_steps and state.global_step > 0 and state.global_step % self.eval_steps == 0:
            self._run_and_log(state, kwargs.get("model"))

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        # Returns None: the Trainer would take any returned value for its TrainerControl.
        if not self.run_on_evaluate:
            return
        metrics = self._run_and_log(state, kwargs.get("model"))
        if isinstance(kwargs.get("metrics"), dict):
            kwargs["metrics"].update(metrics)
