"""MIPICTrainer: a transformers Trainer whose compute_loss adds SIA and PIC to Matryoshka training."""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers.trainer_utils import get_last_checkpoint

from ..losses.base import EncodedText
from ..losses.gather import world
from ..losses.objective import build_objective, resolve_settings
from ..losses.task import check_task_inputs
from .arguments import MIPICTrainingArguments
from .checkpoints import AtomicCheckpoints
from .collator import MatryoshkaDataCollator, split_columns
from .tasks import infer_task
from .unwrap import matryoshka_model

AUX_WEIGHTS_NAME = "mipic_aux.safetensors"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf during training (see ``stop_on_nonfinite_loss``)."""


class MIPICTrainer(AtomicCheckpoints):
    """Trainer for Matryoshka embeddings with the MIPIC objective (or a baseline, ``args.method``).

    ``compute_loss`` runs one encoder forward per text column (two for SimCSE's dropout views), keeps the
    hidden states when the objective needs them, and computes every term from that cache. The auxiliary
    modules (SIA lifts, PIC projectors, classifier) live in ``self.objective``: trained with their own
    learning rate multiplier, saved in every checkpoint as ``mipic_aux.safetensors`` and restored on
    resume, never part of the saved model. Checkpoints appear whole or not at all (``AtomicCheckpoints``).
    Components are logged (mrl, rung, sia_att, sia_cka, pic, total).
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
            data_collator = MatryoshkaDataCollator(processing_class, max_length=max_length)
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
        self.objective = objective
        self.aux_lr_multiplier = float(resolve_settings(args)["aux_lr_multiplier"])
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.objective.to(self.args.device)
        self.teacher, self.teacher_loss = self._build_teacher(model, processing_class, data_collator)
        self.loss_is_scaled_for_ga = False  # per-batch mean: the Trainer divides by accumulation steps
        self._aux_grads_step = -1
        self._aux_synced = False
        self._components: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    def _build_teacher(self, model: Any, tokenizer: Any, collator: Any) -> tuple[Any, Any]:
        """The frozen teacher and its loss when ``teacher_model`` or ``teacher_cache`` is set."""
        from ..losses.teacher_relation import TeacherRelationLoss
        from .teacher import build_teacher

        args = self.args
        if not (args.teacher_model or args.teacher_cache):
            return None, None
        config = matryoshka_model(model).config
        dims = list(args.teacher_dims or config.matryoshka_dimensions)
        bad = [d for d in dims if not 1 <= d <= int(config.text_config.hidden_size)]
        if bad:
            raise ValueError(f"teacher_dims must lie in 1..{config.text_config.hidden_size}, got {bad}")
        teacher = build_teacher(args, matryoshka_model(model), tokenizer, getattr(collator, "max_length", None))
        if args.teacher_cka_weight and not teacher.shares_tokenizer:
            raise ValueError("teacher_cka_weight needs a live teacher with the student's tokenizer (e.g. 'initial')")
        loss = TeacherRelationLoss(
            dims,
            temperature=args.teacher_temperature,
            cka_weight=args.teacher_cka_weight,
            relation=args.teacher_relation,
        )
        return teacher.to(args.device), loss

    def teacher_term(self, encoded: list[EncodedText], inputs: dict[str, Any]) -> torch.Tensor:
        """The teacher term of this batch: each text column once (SimCSE's second view is the same texts)."""
        columns = len(inputs["features"])
        texts = inputs.get("texts")
        if texts is None:
            raise ValueError("a teacher needs the raw texts in the batch (MatryoshkaDataCollator passes them)")
        taught = self.teacher(inputs["features"], texts)
        students = encoded[:columns]
        token_pairs = None
        if taught.token_states is not None and self.args.teacher_cka_weight:
            token_pairs = [
                (s.last_hidden_state, t, s.attention_mask) for s, t in zip(students, taught.token_states, strict=True)
            ]
        target = torch.cat(taught.embeddings)
        terms = []
        for layer in self.args.teacher_layers or [None]:  # None: the last layer
            last = layer is None or layer == students[0].num_layers
            student = torch.cat([s.pooled(None if last else layer) for s in students])
            terms.append(self.teacher_loss(student, target, token_pairs if last else None)["teacher"])
        return torch.stack(terms).mean()

    # ----- loss -------------------------------------------------------------------------------------
    def encode_columns(self, model: torch.nn.Module, features: list[dict[str, torch.Tensor]]) -> list[EncodedText]:
        """One encoder forward per text column (the single column twice for SimCSE)."""
        task_weight = getattr(getattr(self.objective, "task", None), "weight", 1.0)
        columns = features * 2 if self.task_loss == "simcse" and task_weight else features  # no views: no task
        need_hidden = bool(getattr(self.objective, "needs_hidden_states", True))
        need_hidden = need_hidden or (self.teacher is not None and bool(self.args.teacher_layers))
        inner = matryoshka_model(model)
        token_map = inner.rotate if inner.output_rotation is not None else None
        encoded = []
        for batch in columns:
            out = model(**batch, output_hidden_states=need_hidden)
            encoded.append(
                EncodedText(out.last_hidden_state, batch["attention_mask"], inner.pool, out.hidden_states, token_map)
            )
        return encoded

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        check_task_inputs(self.task_loss, len(inputs["features"]), inputs.get("labels") is not None)
        encoded = self.encode_columns(model, inputs["features"])
        parts = self.objective(encoded, inputs.get("labels"))
        if self.teacher is not None:
            parts["teacher"] = self.teacher_term(encoded, inputs)
            parts["loss"] = parts["loss"] + self.args.teacher_weight * parts["teacher"]
        loss = parts["loss"]
        if model.training and self.args.stop_on_nonfinite_loss and not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(self._nonfinite_message(parts))
        bucket = self._components["train" if model.training else "eval"]
        for name, value in parts.items():
            bucket["total" if name == "loss" else name].append(value.detach().float())
        candidates = getattr(getattr(self.objective, "task", None), "num_candidates", None)
        if candidates is not None:  # InfoNCE candidates per anchor: grows with gather_across_devices
            bucket["candidates"].append(torch.tensor(float(candidates)))
        return (loss, parts) if return_outputs else loss

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
    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        # The Trainer zeroes only the model's gradients after each update: zero the auxiliary modules' at the
        # first micro-batch of every update (robust to skipped fp16 steps and gradient accumulation).
        if self._aux_grads_step != self.state.global_step:
            self.objective.zero_grad(set_to_none=True)
            self._aux_grads_step = self.state.global_step
        if not self._aux_synced:
            self._broadcast_aux()
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self._average_aux_grads()
        return loss

    def _broadcast_aux(self) -> None:
        """Multi-process: start every rank from rank 0's auxiliary weights (DDP does this for the encoder)."""
        self._aux_synced = True
        if world()[1] > 1:
            for tensor in self.objective.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)

    def _average_aux_grads(self) -> None:
        """Multi-process: average the auxiliary modules' gradients over ranks, as DDP does for the encoder's
        (they live outside the DDP-wrapped model)."""
        rank, size = world()
        if size == 1:
            return
        for p in self.objective.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(size)

    def _clip_grad_norm(self, model: torch.nn.Module) -> Any:
        # One global norm over everything the optimizer updates: the encoder and the auxiliary modules.
        if self._has_mixed_mesh_grads(model) or not any(True for _ in self.objective.parameters()):
            return super()._clip_grad_norm(model)
        params = itertools.chain(model.parameters(), self.objective.parameters())
        return self.accelerator.clip_grad_norm_(params, self.args.max_grad_norm)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        aux = [p for p in self.objective.parameters() if p.requires_grad and id(p) not in known]
        if aux:
            optimizer.add_param_group(
                {
                    "params": aux,
                    "lr": self.args.learning_rate * self.aux_lr_multiplier,
                    "weight_decay": self.args.weight_decay,
                }
            )
        return optimizer

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
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self.load_aux(resume_from_checkpoint)
