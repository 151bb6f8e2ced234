"""MIPICTrainingArguments: TrainingArguments plus the objective's fields (the ``loss`` and ``teacher`` recipe
sections), checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..losses.objective import check_preset
from .field_rules import Rule, above, at_least, check_fields, within

# The value rules of the fields below and of the TrainingArguments numbers a recipe sets (the ones the Trainer would
# only reject, or misuse, after the output folder exists). Preset-driven fields are None until resolved.
TRAINING_RULES: list[Rule] = [
    above("learning_rate", 0),
    at_least("per_device_train_batch_size", 1),
    at_least("gradient_accumulation_steps", 1),
    ("max_steps", lambda v: v >= -1, "-1 (use num_train_epochs), 0 (no training step) or >= 1"),
    ("warmup_steps", lambda v: v >= 0, ">= 0 (a float < 1 is a ratio)"),
    at_least("weight_decay", 0),
    ("max_grad_norm", lambda v: v >= 0, ">= 0 (0 disables clipping)"),
    within("adam_beta1", 0, 1, closed=False),
    within("adam_beta2", 0, 1, closed=False),
    above("adam_epsilon", 0),  # 0 divides by zero where a gradient is 0: NaN weights after one step
    ("seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    at_least("dataloader_num_workers", 0),
    at_least("save_total_limit", 1, optional=True),
    at_least("logging_steps", 0),
    at_least("save_steps", 0),
]
LOSS_RULES: list[Rule] = [
    at_least("task_weight", 0),
    at_least("num_labels", 2, optional=True),
    above("temperature", 0, optional=True),
    above("cosent_scale", 0),
    within("alpha", 0, 1, optional=True),
    above("attention_temperature", 0, optional=True),
    at_least("sia_attention_weight", 0, optional=True),
    at_least("sia_cka_weight", 0, optional=True),
    at_least("sia_k_min", 1, optional=True),
    at_least("pic_weight", 0, optional=True),
    above("pic_temperature", 0, optional=True),
    at_least("pic_task_weight", 0, optional=True),
    at_least("aux_lr_multiplier", 0, optional=True),
    at_least("twodmse_kl_weight", 0),
    above("twodmse_kl_temperature", 0),
    at_least("cache_mini_batch_size", 1, optional=True),
    at_least("teacher_weight", 0),
    above("teacher_temperature", 0),
    at_least("teacher_cka_weight", 0),
]


@dataclass
class MIPICTrainingArguments(TrainingArguments):
    """TrainingArguments plus the MIPIC objective's options.

    Fields left at None take their value from ``preset`` (see ``mipic_hf.losses.mipic.PRESETS``).
    """

    method: str = field(
        default="mipic", metadata={"help": "Objective: mipic | mrl | 2dmse | starbucks | none (full width only)."}
    )
    preset: str = field(
        default="default",
        metadata={"help": "MIPIC settings preset: default | tuned | paper | authors (docs/method.md, Presets)."},
    )
    task_loss: str = field(
        default="auto",
        metadata={
            "help": "Task loss at each prefix: auto | simcse | mnrl | cosent | classification. auto: from the "
            "data (1 text column -> simcse, 2+ -> mnrl, float score -> cosent, int label -> classification)."
        },
    )
    num_labels: int | None = field(
        default=None, metadata={"help": "Classes of the classification task loss (default: from the data)."}
    )
    mrl_dim_weights: list[float] | None = field(
        default=None, metadata={"help": "Weight of the task loss at each Matryoshka dimension (default: all 1)."}
    )
    temperature: float | None = field(default=None, metadata={"help": "tau of the InfoNCE task losses (preset: 0.05)."})
    cosent_scale: float = field(default=20.0, metadata={"help": "Scale (1 / tau) of the CoSENT cosines."})
    task_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the task loss, every method (>= 0). 0 with a teacher: the teacher is the only "
            "signal, so unlabelled sentences suffice (recipes/matryoshkafy-exits.yaml)."
        },
    )
    alpha: float | None = field(
        default=None,
        metadata={
            "help": "L = alpha * L_MRL + (1 - alpha) * (L_SIA + L_PIC). Default: 0.4 for BERT-size "
            "encoders, 0.5 for decoders or hidden size >= 1024 (the paper's values)."
        },
    )
    attention_temperature: float | None = field(
        default=None, metadata={"help": "SIA attention softmax temperature tau_att (preset: 0.05)."}
    )
    sia_kl_direction: str | None = field(
        default=None,
        metadata={"help": "student_teacher = KL(a_i || a_D) (paper) | teacher_student = KL(a_D || a_i)."},
    )
    detach_sia_teacher: bool | None = field(
        default=None, metadata={"help": "Stop gradients through SIA's full-width teacher (preset: false)."}
    )
    sia_aggregation: str | None = field(
        default=None, metadata={"help": "sum (paper) | mean of the SIA terms over layers x prefixes."}
    )
    sia_attention_weight: float | None = field(
        default=None, metadata={"help": "Weight of SIA's attention-relation KL (paper, tuned: 1.0; default: 0, off)."}
    )
    sia_cka_weight: float | None = field(
        default=None, metadata={"help": "Weight of SIA's top-k CKA term (paper, tuned: 1.0; default: 0, off)."}
    )
    sia_layers: list[int] | None = field(
        default=None, metadata={"help": "Layers (1-based) where SIA applies (default: the PIC ladder's layers)."}
    )
    sia_lift_init: str | None = field(
        default=None,
        metadata={
            "help": "Initial lift P: identity (the slice [I 0], the prefix lifted to itself; preset) | random "
            "(nn.Linear's default init, as the authors' code)."
        },
    )
    sia_topk_rank: str | None = field(
        default=None,
        metadata={
            "help": "Rank tokens for the CKA top-k by the teacher distribution (teacher; preset) or by each "
            "prefix's lifted scores (lifted, the authors' code)."
        },
    )
    sia_k_rule: str | None = field(
        default=None,
        metadata={"help": "Top-k size: fraction (ceil(gamma m); preset) | width (max(k_min, 64 d / D), authors)."},
    )
    pic_aggregation: str | None = field(
        default=None, metadata={"help": "Over the PIC links: sum (paper; preset) | mean (as SIA's mean)."}
    )
    sia_k_min: int | None = field(default=None, metadata={"help": "Minimum top-k tokens per sentence (preset: 8)."})
    sia_gamma_start: float | None = field(
        default=None, metadata={"help": "Kept-token fraction at the smallest prefix (preset: 0.2)."}
    )
    sia_gamma_step: float | None = field(
        default=None, metadata={"help": "Kept-token fraction added per larger prefix (preset: 0.1)."}
    )
    sia_gammas: list[float] | None = field(
        default=None, metadata={"help": "Explicit kept-token fraction per prefix below D (overrides start/step)."}
    )
    pic_ladder: list[str] | None = field(
        default=None,
        metadata={
            "help": "PIC ladder as dim:layer pairs, e.g. 16:1 32:2 64:3 768:6, increasing in both and "
            "ending at (hidden size, last layer). Default: min(#dims, #layers) rungs spread evenly."
        },
    )
    pic_weight: float | None = field(
        default=None, metadata={"help": "Weight of L_PIC (paper, tuned: 1.0; default: 0, off)."}
    )
    pic_temperature: float | None = field(default=None, metadata={"help": "tau of the PIC InfoNCE (preset: 0.05)."})
    pic_task_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the task loss at each PIC rung below the top, added to L_MRL (not in the paper; "
            "preset default: 1, paper: 0)."
        },
    )
    aux_lr_multiplier: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the auxiliary modules (P, phi, classifier) relative to "
            "the encoder's (preset: 2.0)."
        },
    )
    twodmse_layer_weighting: str = field(
        default="log", metadata={"help": "2dmse layer weighting: uniform | log 1/(1+ln l) | linear 1/(1+l)."}
    )
    twodmse_kl_weight: float = field(default=1.0, metadata={"help": "2dmse: weight of the KL to the last layer."})
    twodmse_kl_temperature: float = field(default=0.3, metadata={"help": "2dmse: temperature of that KL."})
    starbucks_pairs: list[str] | None = field(
        default=None, metadata={"help": "starbucks: dim:layer pairs of the diagonal (default: the PIC ladder)."}
    )
    gather_across_devices: bool = field(
        default=False,
        metadata={
            "help": "Multi-process: the contrastive terms (SimCSE / MNRL InfoNCE, PIC links) take in-batch "
            "negatives from every rank; gradients flow through the local part only. SIA and CKA stay per-rank."
        },
    )
    cache_mini_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Gradient caching (GradCache): encode each batch in mini-batches of this many rows without grad, "
            "compute every embedding-level term on the whole batch, then backpropagate mini-batch by mini-batch: "
            "the same gradient with one mini-batch of activations in memory (e.g. 4096 pairs on one GPU). "
            "None: one pass."
        },
    )
    teacher_model: str | None = field(
        default=None,
        metadata={
            "help": "Frozen teacher: 'initial' (a copy of the starting checkpoint), or a path / Hub id of another "
            "embedding model. Adds the relational distillation term (losses/teacher_relation.py) to any method."
        },
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={"help": "Precomputed teacher embeddings (python -m mipic_hf.teacher_cache) instead of a live one."},
    )
    teacher_weight: float = field(
        default=10.0, metadata={"help": "Weight of the teacher term (chosen on STS-B dev; see docs/method.md)."}
    )
    teacher_temperature: float = field(
        default=0.2,
        metadata={"help": "tau_t of the teacher and student in-batch similarity softmaxes (chosen on STS-B dev)."},
    )
    teacher_relation: str = field(
        default="kl",
        metadata={
            "help": "kl: in-batch softmax relations at teacher_temperature (with a task loss; chosen on STS-B dev) | "
            "mse: the pairwise cosines themselves (the no-label recipe; benchmarks/RESULTS.md).",
            "choices": ["kl", "mse"],
        },
    )
    teacher_dims: list[int] | None = field(
        default=None, metadata={"help": "Prefixes the teacher term applies to (default: every Matryoshka dim)."}
    )
    teacher_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Exit layers whose pooled prefixes the teacher term reaches, averaged (default: the last "
            "layer only); e.g. the evaluated exits, where early-exit quality is otherwise lost."
        },
    )
    teacher_cka_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the last-layer token CKA to the teacher (needs a teacher with the same tokenizer)."
        },
    )
    stop_on_nonfinite_loss: bool = field(
        default=True,
        metadata={
            "help": "Stop training at the first NaN/inf loss, naming the step and the component; the last "
            "checkpoint is kept as it was."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator needs the raw text columns."}
    )

    def __post_init__(self) -> None:
        check_fields(self, [*TRAINING_RULES, *LOSS_RULES])  # before TrainingArguments turns values into others
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ValueError(f"num_train_epochs must be > 0, got {self.num_train_epochs}")
        if self.teacher_model and self.teacher_cache:
            raise ValueError("teacher_model and teacher_cache exclude each other; set one")
        if self.teacher_cka_weight and self.cache_mini_batch_size:
            raise ValueError(
                "teacher_cka_weight compares whole-batch token states, which gradient caching (cache_mini_batch_size) "
                "does not keep: set one of them off"
            )
        super().__post_init__()
        check_preset(self.preset)  # fails early; the other switches are checked when the objective is built
