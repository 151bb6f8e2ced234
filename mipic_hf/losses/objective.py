"""Build the training objective (MIPIC or a baseline) from MIPICTrainingArguments and the model config."""

from __future__ import annotations

from typing import Any

from torch import nn

from .mipic import PAPER_LADDERS, PRESETS, MIPICLoss, authors_layout, paper_alpha
from .mrl import MRLLoss
from .pic import AGGREGATIONS as PIC_AGGREGATIONS
from .pic import PICLoss, default_ladder, parse_ladder, validate_ladder
from .sia import AGGREGATIONS, K_RULES, KL_DIRECTIONS, LIFT_INITS, TOPK_RANKS, SIALoss, default_gammas
from .starbucks import StarbucksLoss
from .task import TASKS, MatryoshkaTaskLoss
from .teacher_relation import TeacherRelationLoss
from .twodmse import TwoDMSELoss

METHODS = ("mipic", "mrl", "2dmse", "starbucks", "none")
# every switch with a closed set of values, checked whether or not its term is on (a typo fails either way)
CHOICES: dict[str, tuple[str, ...]] = {
    "sia_kl_direction": KL_DIRECTIONS,
    "sia_aggregation": AGGREGATIONS,
    "sia_lift_init": LIFT_INITS,
    "sia_topk_rank": TOPK_RANKS,
    "sia_k_rule": K_RULES,
    "pic_aggregation": PIC_AGGREGATIONS,
}


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")


def resolve_settings(args: Any) -> dict[str, Any]:
    """The preset's values, overridden by every field the user set (not None); closed-set switches checked."""
    check_preset(args.preset)
    settings = dict(PRESETS[args.preset])
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    for key, allowed in CHOICES.items():
        if settings[key] not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {settings[key]!r}")
    return settings


def build_task_loss(args: Any, settings: dict[str, Any], config: Any, task: str, num_labels: int | None) -> Any:
    """The task loss at every trained width (L_MRL), shared by every method."""
    return MatryoshkaTaskLoss(
        task,
        list(config.matryoshka_dimensions),
        dim_weights=args.mrl_dim_weights,
        temperature=settings["temperature"],
        cosent_scale=args.cosent_scale,
        hidden_size=int(config.text_config.hidden_size),
        num_labels=num_labels,
        gather_across_devices=bool(getattr(args, "gather_across_devices", False)),
        weight=getattr(args, "task_weight", 1.0),
    )


def resolve_ladder(args: Any, config: Any) -> tuple[list[tuple[int, int]], list[int] | None]:
    """(the (dim, layer) ladder, the paper's SIA layers or None): ``pic_ladder`` when given, else the paper's
    layout for its backbones (the notebook's for ``authors``), else one rung per trained dim."""
    hidden, num_layers = int(config.text_config.hidden_size), int(config.text_config.num_hidden_layers)
    paper_layers, paper_ladder = PAPER_LADDERS.get((hidden, num_layers, bool(config.is_causal)), (None, None))
    if args.preset == "authors":
        paper_layers, paper_ladder = authors_layout(hidden, num_layers)
    if args.pic_ladder is not None:
        return parse_ladder(args.pic_ladder), None
    if paper_ladder:
        return paper_ladder, paper_layers
    dims = list(config.matryoshka_dimensions)
    if min(len(dims), num_layers) < 2:
        raise ValueError(
            f"pic_ladder derived from model.matryoshka_dimensions {dims} and {num_layers} layer(s) has one rung; "
            "give two or more matryoshka_dimensions, or a pic_ladder of 2+ 'dim:layer' rungs"
        )
    return default_ladder(dims, num_layers), paper_layers


def build_sia(args: Any, settings: dict[str, Any], config: Any, ladder: list, paper_layers: list[int] | None) -> Any:
    """SIALoss over the prefixes narrower than the full width (None when both SIA weights are 0); the layers
    are ``sia_layers``, else the paper's, else the ladder's."""
    hidden, num_layers = int(config.text_config.hidden_size), int(config.text_config.num_hidden_layers)
    if args.sia_layers is not None:
        sia_layers = list(args.sia_layers)
    elif paper_layers is not None:
        sia_layers = paper_layers
    else:
        sia_layers = sorted({layer for _, layer in ladder})
    bad = [layer for layer in sia_layers if not 1 <= layer <= num_layers]
    if bad or not sia_layers:
        raise ValueError(f"sia_layers must lie in 1..{num_layers} (num_hidden_layers), got {sia_layers}")
    prefix_dims = [d for d in config.matryoshka_dimensions if d < hidden]
    if not prefix_dims or not (settings["sia_attention_weight"] or settings["sia_cka_weight"]):
        return None
    gammas = args.sia_gammas
    if gammas is None:
        gammas = default_gammas(len(prefix_dims), settings["sia_gamma_start"], settings["sia_gamma_step"])
    return SIALoss(
        hidden,
        prefix_dims,
        sia_layers,
        attention_temperature=settings["attention_temperature"],
        kl_direction=settings["sia_kl_direction"],
        detach_sia_teacher=settings["detach_sia_teacher"],
        aggregation=settings["sia_aggregation"],
        attention_weight=settings["sia_attention_weight"],
        cka_weight=settings["sia_cka_weight"],
        k_min=settings["sia_k_min"],
        lift_init=settings["sia_lift_init"],
        topk_rank=settings["sia_topk_rank"],
        k_rule=settings["sia_k_rule"],
        gammas=gammas,
    )


def build_mipic(args: Any, settings: dict[str, Any], config: Any, task_loss: Any, ladder: list, sia: Any) -> Any:
    """MIPICLoss: the task loss, SIA, PIC over the ladder (None at weight 0) and the rung task loss."""
    pic = None
    if settings["pic_weight"]:
        pic = PICLoss(
            ladder,
            temperature=settings["pic_temperature"],
            gather_across_devices=bool(getattr(args, "gather_across_devices", False)),
            aggregation=settings["pic_aggregation"],
        )
    alpha = settings["alpha"]
    if alpha is None:
        alpha = paper_alpha(int(config.text_config.hidden_size), bool(config.is_causal))
    if settings["pic_task_weight"] < 0:
        raise ValueError(f"pic_task_weight must be >= 0, got {settings['pic_task_weight']}")
    return MIPICLoss(
        task_loss,
        sia,
        pic,
        alpha=alpha,
        pic_weight=settings["pic_weight"],
        rungs=ladder,
        pic_task_weight=settings["pic_task_weight"],
    )


def build_objective(args: Any, config: Any, task: str, num_labels: int | None = None) -> nn.Module:
    """The loss module for ``args.method`` on a MatryoshkaConfig; validates every option first."""
    if args.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {args.method!r}")
    if task not in TASKS:
        raise ValueError(f"task_loss must be one of auto, {', '.join(TASKS)}, got {task!r}")
    settings = resolve_settings(args)
    hidden, num_layers = int(config.text_config.hidden_size), int(config.text_config.num_hidden_layers)
    task_loss = build_task_loss(args, settings, config, task, num_labels)
    if args.method in ("mrl", "none"):
        return MRLLoss(task_loss, full_dim_only=args.method == "none")
    if args.method == "2dmse":
        return TwoDMSELoss(
            task_loss,
            layers=list(config.matryoshka_layers),
            num_layers=num_layers,
            layer_weighting=args.twodmse_layer_weighting,
            kl_weight=args.twodmse_kl_weight,
            kl_temperature=args.twodmse_kl_temperature,
        )
    ladder, paper_layers = resolve_ladder(args, config)
    if args.method == "starbucks":
        pairs = parse_ladder(args.starbucks_pairs, "starbucks_pairs") if args.starbucks_pairs else ladder
        validate_ladder(pairs, hidden, num_layers, field="starbucks_pairs")
        return StarbucksLoss(task_loss, pairs)
    validate_ladder(ladder, hidden, num_layers)
    sia = build_sia(args, settings, config, ladder, paper_layers)
    return build_mipic(args, settings, config, task_loss, ladder, sia)


def build_teacher_loss(args: Any, config: Any) -> TeacherRelationLoss | None:
    """The teacher's relational term when ``teacher_model`` or ``teacher_cache`` is set (None otherwise), its dims
    and exit layers checked against the model: the one place both the recipe and the trainer build it from."""
    if not (args.teacher_model or args.teacher_cache):
        return None
    hidden, num_layers = int(config.text_config.hidden_size), int(config.text_config.num_hidden_layers)
    dims = list(args.teacher_dims or config.matryoshka_dimensions)
    bad = [d for d in dims if not 1 <= d <= hidden]
    if bad:
        raise ValueError(f"teacher_dims must lie in 1..{hidden}, got {bad}")
    bad = [layer for layer in args.teacher_layers or [] if not 1 <= layer <= num_layers]
    if bad:
        raise ValueError(f"teacher_layers must lie in 1..{num_layers} (num_hidden_layers), got {bad}")
    return TeacherRelationLoss(
        dims, temperature=args.teacher_temperature, cka_weight=args.teacher_cka_weight, relation=args.teacher_relation
    )
