"""MIPICTrainer: a transformers Trainer whose compute_loss adds SIA and PIC to Matryoshka training."""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers.trainer_utils import get_last_checkpoint

from ..losses.base import check_objective
from ..losses.objective import build_objective, build_teacher_loss, resolve_settings
from ..losses.task import check_task_inputs
from .arguments import MIPICTrainingArguments
from .checkpoints import AtomicCheckpoints
from .collator import MatryoshkaDataCollator, pad_multiple, split_columns, with_lengths
from .errors import NonFiniteLossError
from .grad_cache import detached, leaf_gradients, replays
from .module import TrainingModule
from .tasks import infer_task
from .teacher import TeacherTerm
from .unwrap import matryoshka_model

AUX_WEIGHTS_NAME = "mipic_aux.safetensors"


@torch.no_grad()
def check_finite_weights(model: torch.nn.Module, step: int) -> None:
    """After training: every weight finite, else NonFiniteLossError. The loss of the last step can be finite while
    its optimizer step overflows the weights (a huge learning rate or weight decay); nothing downstream should then
    calibrate, evaluate or export them."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteLossError(
            f"training left non-finite weights after step {step} ({len(bad)} tensors, e.g. {bad[0]}): lower "
            "learning_rate or weight_decay; nothing after training was written"
        )


class MIPICTrainer(AtomicCheckpoints):
    """Trainer for Matryoshka embeddings with the MIPIC objective (or a baseline, ``args.method``).

    The Trainer holds (and accelerate wraps) a :class:`TrainingModule`: the model given as ``model=`` (the
    encoder, ``trainer.encoder``) and the objective (``trainer.objective``) in one module, whose forward runs
    one encoder pass per text column (two for SimCSE's dropout views) and every term from that cache. So DDP,
    FSDP and DeepSpeed sync and shard the auxiliary modules (SIA lifts, PIC projectors, classifier) like the
    encoder. Those are trained at their own learning rate multiplier, saved in every checkpoint as
    ``mipic_aux.safetensors`` and restored on resume, never part of the saved model. Checkpoints appear whole
    or not at all (``AtomicCheckpoints``). Components are logged (mrl, rung, sia_att, sia_cka, pic, total).
    """

    def __init__(
        self,
        model: Any = None,
        args: MIPICTrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        objective: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = MIPICTrainingArguments(output_dir="mipic_output")
        if not isinstance(args, MIPICTrainingArguments):
            raise TypeError(f"args must be MIPICTrainingArguments, got {type(args).__name__}")
        if model is None:
            raise ValueError("model must be a MatryoshkaModel (e.g. MatryoshkaModel.from_backbone(...))")
        if data_collator is None:
            if processing_class is None:
                raise ValueError("pass processing_class=tokenizer (or a data_collator) to tokenize the text columns")
            max_length = getattr(matryoshka_model(model).config, "max_seq_length", None)
            data_collator = MatryoshkaDataCollator(
                processing_class, max_length=max_length, pad_to_multiple_of=pad_multiple(args)
            )
        if args.train_sampling_strategy == "group_by_length" and hasattr(train_dataset, "map"):
            tokenizer = processing_class or getattr(data_collator, "tokenizer", None)
            max_length = getattr(data_collator, "max_length", None)
            train_dataset = with_lengths(train_dataset, tokenizer, args.length_column_name, max_length)
        if args.task_loss == "auto":
            self.task_loss, num_labels = infer_task(train_dataset)
        else:
            self.task_loss, num_labels = args.task_loss, None
        if args.num_labels is not None:
            num_labels = args.num_labels
        elif self.task_loss == "classification" and num_labels is None:
            if train_dataset is None:
                raise ValueError("num_labels is required for task_loss 'classification' without a train_dataset")
            num_labels = infer_task(train_dataset)[1]
        if hasattr(train_dataset, "column_names"):
            example = train_dataset[0] if len(train_dataset) else None
            texts, label = split_columns(train_dataset.column_names, example)
            check_task_inputs(self.task_loss, len(texts), label is not None)
        if objective is None:
            objective = build_objective(args, matryoshka_model(model).config, self.task_loss, num_labels)
        check_objective(objective)
        self.objective = objective
        self.aux_lr_multiplier = float(resolve_settings(args)["aux_lr_multiplier"])
        teacher = self._build_teacher(args, model, processing_class, data_collator)
        super().__init__(
            model=TrainingModule(model, objective, self.task_loss, teacher),
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.teacher = teacher.teacher if teacher is not None else None
        self.loss_is_scaled_for_ga = False  # per-batch mean: the Trainer divides by accumulation steps
        self._components: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._step_parts: dict[str, torch.Tensor] = {}  # the last training step's components, for _check_finite

    @staticmethod
    def _build_teacher(args: MIPICTrainingArguments, model: Any, tokenizer: Any, collator: Any) -> TeacherTerm | None:
        """The frozen teacher's term when ``teacher_model`` or ``teacher_cache`` is set: the loss from
        :func:`~mipic_hf.losses.objective.build_teacher_loss`, the frozen model beside it."""
        from .teacher import build_teacher

        loss = build_teacher_loss(args, matryoshka_model(model).config)
        if loss is None:
            return None
        teacher = build_teacher(args, matryoshka_model(model), tokenizer, getattr(collator, "max_length", None))
        if args.teacher_cka_weight and not teacher.shares_tokenizer:
            raise ValueError("teacher_cka_weight needs a live teacher with the student's tokenizer (e.g. 'initial')")
        term = TeacherTerm(teacher, loss, args.teacher_weight, args.teacher_layers, bool(args.teacher_cka_weight))
        return term.to(args.device)

    @property
    def encoder(self) -> torch.nn.Module:
        """The model being trained (what ``model=`` was), without the objective around it."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False).encoder

    # ----- loss -------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        check_task_inputs(self.task_loss, len(inputs["features"]), inputs.get("labels") is not None)
        parts = model(features=inputs["features"], labels=inputs.get("labels"), texts=inputs.get("texts"))
        self._record(parts, model.training)
        return (parts["loss"], parts) if return_outputs else parts["loss"]

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """The Trainer's step, or with ``cache_mini_batch_size`` a gradient-cached one (``training.grad_cache``);
        then the non-finite check, after the backward was queued (:meth:`_check_finite`)."""
        size = self.args.cache_mini_batch_size
        if not size:
            loss = super().training_step(model, inputs, num_items_in_batch)
        else:
            model.train()
            inputs = self._prepare_inputs(inputs)
            check_task_inputs(self.task_loss, len(inputs["features"]), inputs.get("labels") is not None)
            parts = self._cached_step(model, inputs, size)
            self._record(parts, training=True)
            loss = parts["loss"] / self.current_gradient_accumulation_steps
        self._check_finite()
        return loss

    def _cached_step(self, model: torch.nn.Module, inputs: dict[str, Any], size: int) -> dict[str, torch.Tensor]:
        """Encode without grad, the whole batch's loss and its gradient on the cached vectors, then each mini-batch
        replayed and backpropagated (DDP syncs on the last one); returns the logged components (detached). Forwards
        run under the Trainer's autocast, backwards outside it, as in the Trainer's own step."""
        module = self.accelerator.unwrap_model(model, keep_torch_compile=False)
        labels = inputs.get("labels")
        with self.compute_loss_context_manager():
            cached, parts, skip = module.cached_batch_loss(inputs["features"], labels, inputs.get("texts"), size)
        grads = leaf_gradients(parts["loss"], cached)
        full = None
        if any(p.requires_grad for p in module.objective.parameters()):  # its own parameters: recomputed, synced
            full = lambda: module.objective(detached(cached), labels, **skip)["loss"]  # noqa: E731
        plan = replays(cached, grads, bool(skip), full)
        logged = {name: value.detach() for name, value in parts.items()}
        scale = 1.0 / self.current_gradient_accumulation_steps
        for i, replay in enumerate(plan):
            sync = contextlib.nullcontext() if i == len(plan) - 1 else self.accelerator.no_sync(model)
            with sync:
                with self.compute_loss_context_manager():
                    out = model(replay=replay)
                self.accelerator.backward(out.pop("loss") * scale)
            for name, value in out.items():
                logged[name] = logged[name] + value if name in logged else value
        if "token_loss" in logged:
            logged["loss"] = logged["loss"] + logged.pop("token_loss")
        return logged

    def _record(self, parts: dict[str, torch.Tensor], training: bool) -> None:
        """Keep the components for the log, detached, without reading them on the host (no device sync in
        ``compute_loss``); the training step's are also kept for :meth:`_check_finite`."""
        detached = {name: value.detach() for name, value in parts.items()}
        if training:
            self._step_parts = detached
        bucket = self._components["train" if training else "eval"]
        for name, value in detached.items():
            bucket["total" if name == "loss" else name].append(value.float())
        candidates = self.objective.num_candidates
        if candidates is not None:  # InfoNCE candidates per anchor: grows with gather_across_devices
            bucket["candidates"].append(torch.tensor(float(candidates)))

    def _check_finite(self) -> None:
        """Stop on a non-finite training loss (``stop_on_nonfinite_loss``): one host read per step, made after the
        step's backward was queued (the Trainer's own ``logging_nan_inf_filter`` reads the loss there too). The
        optimizer has not stepped yet (except under DeepSpeed, whose backward steps it at the accumulation
        boundary); either way the stop comes before the next checkpoint is saved."""
        parts = self._step_parts
        if self.args.stop_on_nonfinite_loss and parts and not torch.isfinite(parts["loss"]).all():
            raise NonFiniteLossError(self._nonfinite_message(parts))

    def _nonfinite_message(self, parts: dict[str, torch.Tensor]) -> str:
        bad = [f"{k}={v.item()}" for k, v in parts.items() if k != "loss" and not torch.isfinite(v).all()]
        last = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
        kept = f"the last checkpoint is {last}" if last else "no checkpoint was saved yet"
        return (
            f"loss is {parts['loss'].item()} at step {self.state.global_step + 1} (non-finite: "
            f"{', '.join(bad) or 'loss'}); training stopped, {kept}"
        )

    def prediction_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: Any = None
    ) -> tuple[torch.Tensor, None, None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        bucket = self._components[mode]
        if "loss" in logs or "eval_loss" in logs:
            for name, values in bucket.items():
                if values:
                    logs[prefix + name] = torch.stack(values).mean().item()
            bucket.clear()
        super().log(logs, start_time)

    # ----- optimizer and checkpoints ---------------------------------------------------------------
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, with the objective's parameters moved to groups of their own at
        ``aux_lr_multiplier`` x the learning rate (each keeps its weight decay group)."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        aux = {id(p) for p in self.objective.parameters()}
        if not aux or self.aux_lr_multiplier == 1.0:
            return optimizer
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in aux]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in aux]
                settings = {k: v for k, v in group.items() if k != "params"}
                optimizer.add_param_group({**settings, "params": moved, "lr": group["lr"] * self.aux_lr_multiplier})
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        return optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the encoder as the model, as the Trainer would save it alone (the objective's weights go to
        checkpoints only, :meth:`save_aux`). A state dict gathered by a sharded engine holds the whole module's
        keys: the encoder's are kept."""
        if state_dict is not None:
            state_dict = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
        held = self.model
        self.model = self.encoder
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.model = held

    def write_extra_checkpoint_files(self, folder: str) -> None:
        self.save_aux(folder)

    def save_aux(self, folder: str) -> None:
        """Write the auxiliary modules' weights (safetensors) into ``folder``."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.objective.state_dict().items()}
        if state:
            os.makedirs(folder, exist_ok=True)
            save_file(state, os.path.join(folder, AUX_WEIGHTS_NAME), metadata={"method": self.args.method})

    def load_aux(self, folder: str) -> None:
        """Restore the auxiliary modules from a checkpoint folder written by :meth:`save_aux`."""
        path = os.path.join(folder, AUX_WEIGHTS_NAME)
        expected = self.objective.state_dict()
        if not expected:
            return
        if not os.path.isfile(path):
            raise ValueError(
                f"resume_from_checkpoint: {folder} has no {AUX_WEIGHTS_NAME} (the MIPIC auxiliary "
                "modules); it was not written by MIPICTrainer with this method"
            )
        state = load_file(path, device=str(self.args.device))
        missing = sorted(set(expected) - set(state))
        if missing:
            raise ValueError(
                f"resume_from_checkpoint: {path} lacks {missing[:3]}; was it trained with another "
                f"method or ladder than {self.args.method!r}?"
            )
        self.objective.load_state_dict(state)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, self.encoder if model is None else model)
        self.load_aux(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        """``load_best_model_at_end``: the best checkpoint's encoder and auxiliary weights."""
        self._load_from_checkpoint(self.state.best_model_checkpoint)
