"""Standard budget folders: one (exit layer, dimension) budget of a trained model as a folder that stock engines
serve with no remote code.

What a folder holds, for the budget (L, D):

- the backbone's own architecture: ``config.json`` is the backbone's config (``architectures`` the stock class,
  e.g. ``BertModel``) with ``num_hidden_layers = L`` (and the per-layer lists in ``PER_LAYER_LISTS``, Qwen3's
  ``layer_types``, cut to L; other per-layer fields are not known here), plus ``matryoshka_dimensions`` (the
  trained dims <= D) and ``is_matryoshka``, the keys vLLM reads for its ``dimensions`` request field; the
  safetensors weights (sharded past 5 GB) hold the first L blocks only. The task pooler the stock class expects
  and training drops (BERT's dense + tanh, which no embedding uses) is written as zeros, so the class loads with
  no missing weight; any other mismatch with the stock class is refused;
- the tokenizer (left padding for last-token pooling, right for CLS);
- the sentence-transformers modules, all stock: Transformer -> Pooling -> Dense -> Normalize. The Dense layer
  (identity activation) holds the first D rows of the output rotation (with its centring as the bias), or of
  the identity when the model has no rotation; it is left out when there is neither a rotation nor a cut. At a
  full width whose codes the model takes in the backbone's coordinates (``config.full_width_codes: backbone``) it
  holds the identity and the centring, so ``quantize_embeddings`` on the folder's vectors gives the model's codes;
- ``quantization_ranges.json`` when the model holds calibrated int8 ranges: the budget's per-coordinate (min, max)
  for ``quantize_embeddings(..., "int8", ranges=...)``;
- ``README.md``: a short card with the serving commands.

So ``SentenceTransformer(folder)`` computes ``MatryoshkaModel.encode(texts, dimension=D, layer=L)`` (its
``code_view`` at a full width coded in the backbone's basis: the same cosines, the model's codes; tested, as
is Infinity; Text Embeddings Inference and vLLM read the same modules but were not run here, and they normalise
by default); ``AutoModel.from_pretrained(folder)``'s token states + the pooling, the Dense module and the
normalisation compute the same vector. Several budgets in one call write one folder per budget, named
``layer{L}-dim{D}``, under OUT_DIR.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .budget import RANGES_FILE, Budget, ranges_record, resolve_budgets
from .export import (
    dense_weights,
    has_merged_weights,
    read_mipic_config,
    save_tokenizer,
    sentence_transformers_files,
    write_sentence_transformers_files,
)
from .folders import ExportError, check_out_dir, write_folder_atomically

PER_LAYER_LISTS = ("layer_types",)  # config fields with one entry per block (Qwen3, Gemma, ...): cut to L
STANDARD_CARD_TEMPLATE = "standard_model_card.md"
POOLER_PREFIX = "pooler."  # the task pooler (BERT, XLM-R): written as zeros when training dropped it
PADDING_SIDE = {"last_token": "left", "cls": "right"}  # what sentence-transformers' pooling of that mode expects
BUDGET_KEY = "mipic_budget"  # config.json: the budget and the model it was cut from (for the card)


def standard_model_type(text_config: dict[str, Any]) -> str:
    """The backbone's model type when transformers ships its architecture (else ExportError)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    model_type = text_config.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES or model_type not in MODEL_MAPPING_NAMES or text_config.get("auto_map"):
        raise ExportError(
            f"backbone type {model_type!r} has no standard export: its architecture is not one transformers ships "
            "(or its config names code of its own), so a folder without remote code cannot describe it; serve the "
            "export folder with trust_remote_code"
        )
    return model_type


def check_standard(
    source: str | Path, out_dir: str | Path, budgets: list[Budget], overwrite: bool = False
) -> list[Budget]:
    """Everything a standard export needs, checked before any work; returns the budgets to write."""
    source, out = Path(source), Path(out_dir)
    config = read_mipic_config(source, "source")
    if not has_merged_weights(source):
        raise ExportError(f"RUN_OR_EXPORT '{source}' has no merged weights (model.safetensors): export the run itself")
    standard_model_type(config.get("text_config") or {})
    from ..configuration_mipic import MatryoshkaConfig

    budgets = resolve_budgets(budgets, MatryoshkaConfig.from_pretrained(source))
    check_out_dir(out, overwrite, source=source)
    return budgets


def backbone_config(model: Any, budget: Budget) -> Any:
    """The backbone's config for a folder cut after ``budget.layer`` blocks, with the Matryoshka keys."""
    config = model.config.text_config.__class__.from_dict(model.config.text_config.to_dict())
    config.num_hidden_layers = budget.layer
    for name in PER_LAYER_LISTS:
        values = getattr(config, name, None)
        if isinstance(values, list) and len(values) == model.num_layers:
            setattr(config, name, values[: budget.layer])
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    architecture = type(model.backbone).__name__
    if architecture != MODEL_MAPPING_NAMES.get(config.model_type):
        raise ExportError(f"backbone class {architecture} is not transformers' own {config.model_type} model")
    config.architectures = [architecture]
    config.matryoshka_dimensions = [d for d in model.config.matryoshka_dimensions if d <= budget.dimension]
    config.is_matryoshka = True
    setattr(
        config,
        BUDGET_KEY,
        {
            "layer": budget.layer,
            "dimension": budget.dimension,
            "num_layers": model.num_layers,
            "hidden_size": model.hidden_size,
            "rotation": model.output_rotation is not None,
            "cut": budget.dimension < model.hidden_size,
            "normalize": bool(model.config.normalize),
            "int8_ranges": RANGES_FILE if model.quantization is not None else None,
        },
    )
    return config


def backbone_state(model: Any, budget: Budget, config: Any) -> dict[str, Any]:
    """The first ``budget.layer`` blocks' weights (and everything outside the block list), plus zeros for the task
    pooler the stock class has and training dropped (BERT's dense + tanh, which no embedding uses). Any other
    difference from the stock class's weights is an ExportError: the folder would not load as trained."""
    import torch
    from transformers import AutoModel

    prefix = model.block_list_name() + "."
    state = {}
    for key, value in model.backbone.state_dict().items():
        if key.startswith(prefix) and int(key[len(prefix) :].split(".")[0]) >= budget.layer:
            continue
        state[key] = value.detach().contiguous()
    with torch.device("meta"):
        expected = AutoModel.from_config(config).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if unexpected or any(not key.startswith(POOLER_PREFIX) for key in missing):
        raise ExportError(
            f"the stock {config.architectures[0]} does not hold this backbone's weights as trained (missing "
            f"{[k for k in missing if not k.startswith(POOLER_PREFIX)][:3]}, unexpected {unexpected[:3]})"
        )
    for key in missing:
        state[key] = torch.zeros(expected[key].shape, dtype=state[next(iter(state))].dtype)
    return state


def _write_budget(
    model: Any, source: Path, budget: Budget, folder: Path, repo_id: str | None, license: str | None
) -> None:
    from huggingface_hub import save_torch_state_dict

    config = backbone_config(model, budget)
    getattr(config, BUDGET_KEY)["license"] = license
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    save_torch_state_dict(backbone_state(model, budget, config), folder)  # safetensors, sharded past 5 GB
    tokenizer = save_tokenizer(source, model.config, folder, PADDING_SIDE.get(model.config.pooling))
    dense = dense_weights(model, budget.dimension, coded=True)
    files = sentence_transformers_files(
        model.config, tokenizer.model_max_length, dense_out=budget.dimension if dense is not None else None
    )
    write_sentence_transformers_files(folder, files, dense)
    record = ranges_record(model, budget)
    if record is not None:
        (folder / RANGES_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")
    render_standard_card(folder, repo_id).save(folder / "README.md")


def render_standard_card(folder: str | Path, repo_id: str | None = None) -> Any:
    """The standard folder's README.md (a ``ModelCard``), from its config.json alone (so a card can be rendered
    again for another repo id)."""
    from huggingface_hub import ModelCard, ModelCardData

    from .card import template_path

    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    budget = dict(config[BUDGET_KEY])
    data = ModelCardData(
        license=budget.pop("license", None),
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=["mipic", "matryoshka", "sentence-transformers", "feature-extraction", "text-embeddings-inference"],
        model_name=repo_id,
    )
    return ModelCard.from_template(
        data,
        template_path=str(template_path(STANDARD_CARD_TEMPLATE)),
        repo_id=repo_id or f"<org>/<name>-{Budget(budget['layer'], budget['dimension']).name}",
        architecture=config["architectures"][0],
        dims=", ".join(str(d) for d in config["matryoshka_dimensions"]),
        smallest=config["matryoshka_dimensions"][0],
        **budget,
    )


def export_standard(
    source: str | Path,
    out_dir: str | Path,
    budgets: list[Budget] | None = None,
    *,
    overwrite: bool = False,
    repo_id: str | None = None,
    license: str | None = None,
) -> list[Path]:
    """Write the standard folder of each budget (see the module docstring); returns their paths. One budget
    requested (or none: the default one): OUT_DIR is the folder and its card names ``repo_id``; several: one folder
    OUT_DIR/layer{L}-dim{D} each, whose card names ``{repo_id}-layer{L}-dim{D}``. Nothing is written when a check
    fails."""
    from ..modeling_mipic import MatryoshkaModel

    requested = list(budgets or [])
    budgets = check_standard(source, out_dir, requested, overwrite)
    source, out = Path(source), Path(out_dir)
    model = MatryoshkaModel.from_pretrained(source).eval()
    single = len(requested) <= 1

    def build(tmp: Path) -> None:
        for budget in budgets:
            folder = tmp if single else tmp / budget.name
            name = repo_id if single or repo_id is None else f"{repo_id}-{budget.name}"
            _write_budget(model, source, budget, folder, name, license)

    write_folder_atomically(out, build)
    return [out] if single else [out / budget.name for budget in budgets]


def is_standard_folder(path: str | Path) -> bool:
    """A folder written by :func:`export_standard`: a stock config carrying the budget, no remote code."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config.get(BUDGET_KEY), dict) and "auto_map" not in config
