"""The export folder: turns a run folder (written by ``mipic_hf.run``) into a folder someone else loads in one line:

- config.json (``auto_map``, the Matryoshka keys, trained dims and layers, the ``mipic_training`` summary),
  ``model.safetensors`` with LoRA merged into the backbone (or, with ``--adapter_only``, the PEFT adapter in
  ``adapter/`` and ``config.adapter`` naming the base model), the tokenizer, and the two self-contained
  code files: ``AutoModel.from_pretrained(folder, trust_remote_code=True)``;
- ``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json`` and
  ``config_sentence_transformers.json``: ``SentenceTransformer(folder, trust_remote_code=True, truncate_dim=d)``;
- ``eval/`` (results json, markdown, plots), ``mipic_recipe.yaml`` and README.md (the model card).

The folder is built next to OUT_DIR and renamed into place at the end: a failure leaves nothing behind,
and an existing non-empty OUT_DIR is only replaced with ``--overwrite``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .card import render_card
from .folders import (
    ADAPTER_DIR,
    AUTO_MAP,
    CODE_FILES,
    DENSE_DIR,
    PACKAGE_DIR,
    RECIPE_NAME,
    ExportError,
    check_out_dir,
    write_folder_atomically,
    write_json,
)

_ST_POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "last_token": "pooling_mode_lasttoken",
}


def read_mipic_config(folder: Path, what: str) -> dict[str, Any]:
    """The config.json of a folder MatryoshkaModel saved (a run or an export), checked (raises ExportError)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{what} '{folder}' has no config.json: pass the output_dir of a mipic_hf.run run")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ExportError(f"{what} '{folder}': config.json is not valid JSON ({err})") from None
    model_type = config.get("model_type")
    if model_type != "mipic_matryoshka":
        raise ExportError(f"{what} '{folder}': config.json has model_type {model_type!r}, expected 'mipic_matryoshka'")
    return config


def has_merged_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))


def check_export(run_dir: str | Path, out_dir: str | Path, adapter_only: bool = False, overwrite: bool = False) -> None:
    """Everything an export needs, checked before any work (raises ExportError)."""
    run, out = Path(run_dir), Path(out_dir)
    config = read_mipic_config(run, "RUN_DIR")
    if adapter_only:
        if not (run / ADAPTER_DIR / "adapter_config.json").is_file():
            raise ExportError(f"--adapter_only: RUN_DIR '{run}' has no {ADAPTER_DIR}/ (was it trained with use_lora?)")
        if config.get("output_rotation"):
            raise ExportError(
                f"--adapter_only: RUN_DIR '{run}' has an output rotation, which only merged weights carry; "
                "export without --adapter_only"
            )
    elif not has_merged_weights(run):
        raise ExportError(f"RUN_DIR '{run}' has no model.safetensors")
    check_out_dir(out, overwrite, source=run)


def max_seq_length(config: Any, tokenizer_max_length: int | None = None) -> int | None:
    """The model's ``max_seq_length``, else what sentence-transformers' Transformer module takes for a model that
    names none: the smaller of the backbone's ``max_position_embeddings`` and the tokenizer's ``model_max_length``
    (tokenizers without a limit report ~1e30, ignored); None when neither is known."""
    if config.max_seq_length:
        return int(config.max_seq_length)
    known = [getattr(config.text_config, "max_position_embeddings", None), tokenizer_max_length]
    limits = [int(v) for v in known if isinstance(v, int) and 0 < v < 10**7]
    return min(limits) if limits else None


def sentence_transformers_files(
    config: Any, tokenizer_max_length: int | None = None, dense_out: int | None = None
) -> dict[str, Any]:
    """The sentence-transformers module files for a MatryoshkaConfig: Transformer -> Pooling (-> Dense) ->
    Normalize.

    The Transformer module loads the folder through AutoModel and reads ``last_hidden_state``; pooling mirrors
    ``config.pooling``. A stock Dense module (identity activation, weights from :func:`dense_weights`) applies the
    output rotation and the cut: ``dense_out`` is its width, by default the full width when the model has a
    rotation and no Dense module otherwise.
    """
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    hidden = int(config.text_config.hidden_size)
    rotation = bool(getattr(config, "output_rotation", False))
    if dense_out is None and rotation:
        dense_out = hidden
    dense = {}
    if dense_out is not None:
        modules.append({"idx": 2, "name": "2", "path": DENSE_DIR, "type": "sentence_transformers.models.Dense"})
        dense[f"{DENSE_DIR}/config.json"] = {
            "in_features": hidden,
            "out_features": int(dense_out),
            "bias": rotation,
            "activation_function": "torch.nn.modules.linear.Identity",
        }
    if config.normalize:
        n = len(modules)
        modules.append(
            {"idx": n, "name": str(n), "path": f"{n}_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    pooling = {"word_embedding_dimension": hidden}
    pooling.update({flag: mode == config.pooling for mode, flag in _ST_POOLING_FLAGS.items()})
    pooling.update(
        {"pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True}
    )
    return {
        "modules.json": modules,
        "1_Pooling/config.json": pooling,
        **dense,
        "sentence_bert_config.json": {
            "max_seq_length": max_seq_length(config, tokenizer_max_length),
            "do_lower_case": False,
        },
        "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer",
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    }


def dense_weights(model: Any, dimension: int | None = None, coded: bool = False) -> dict[str, Any] | None:
    """The Dense module's tensors for the output rotation and the cut to ``dimension`` (default: full width):
    ``y = ((z - mean) @ R)[:d]``, i.e. the first d rows of R^T with bias ``-(mean @ R)[:d]``; without a rotation,
    the first d rows of the identity (no bias), and None at full width (nothing to apply). ``coded`` (one budget's
    folder): R followed by the model's code basis (``MatryoshkaModel.code_basis``), so that the folder's vectors are
    those its int8 / binary codes are taken from (the identity at a full width coded in the backbone's basis)."""
    import torch

    hidden = model.hidden_size
    dimension = hidden if dimension is None else dimension
    if model.output_rotation is None:
        return None if dimension == hidden else {"linear.weight": torch.eye(hidden)[:dimension].contiguous()}
    matrix = model.output_rotation.matrix.detach().cpu().float()
    basis = model.code_basis() if coded and dimension == hidden else None
    matrix = matrix if basis is None else matrix @ basis.detach().cpu().float()
    mean = model.output_rotation.mean.detach().cpu().float()
    return {
        "linear.weight": matrix.T[:dimension].contiguous(),
        "linear.bias": -(mean @ matrix)[:dimension].contiguous(),
    }


def write_sentence_transformers_files(folder: Path, files: dict[str, Any], dense: dict[str, Any] | None) -> None:
    """Write :func:`sentence_transformers_files`' JSON files and, when given, the Dense module's safetensors."""
    from safetensors.torch import save_file

    for name, value in files.items():
        write_json(folder / name, value)
    if dense is not None:
        save_file(dense, str(folder / DENSE_DIR / "model.safetensors"))


def save_tokenizer(run: Path, config: Any, folder: Path, padding_side: str | None = None) -> Any:
    """Save the run's tokenizer into ``folder`` (with ``padding_side`` when given) without the loading-time flags
    transformers writes back (they mean nothing on the Hub); returns it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run, config=config.text_config)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(folder)
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
        write_json(tokenizer_config, {k: v for k, v in settings.items() if k not in ("is_local", "local_files_only")})
    return tokenizer


def _write_folder(
    run: Path, tmp: Path, out: Path, adapter_only: bool, repo_id: str | None, license: str | None
) -> None:
    from ..configuration_mipic import MatryoshkaConfig
    from ..modeling_mipic import MatryoshkaModel

    config = MatryoshkaConfig.from_pretrained(run)
    if adapter_only:
        adapter_config = json.loads((run / ADAPTER_DIR / "adapter_config.json").read_text(encoding="utf-8"))
        base = adapter_config.get("base_model_name_or_path")
        if not base:
            raise ExportError(f"{run / ADAPTER_DIR}/adapter_config.json names no base_model_name_or_path")
        config.adapter = {"base_model": base, "revision": adapter_config.get("revision"), "subfolder": ADAPTER_DIR}
        config.auto_map = dict(AUTO_MAP)
        config.save_pretrained(tmp)
        package = PACKAGE_DIR
        for name in CODE_FILES:
            shutil.copy2(package / name, tmp / name)
        shutil.copytree(run / ADAPTER_DIR, tmp / ADAPTER_DIR)
    else:
        model = MatryoshkaModel.from_pretrained(run, config=config)
        model.config.adapter = None
        model.save_pretrained(tmp)  # config.json with auto_map, model.safetensors, the two code files
    tokenizer = save_tokenizer(run, config, tmp)
    files = sentence_transformers_files(config, tokenizer.model_max_length)
    write_sentence_transformers_files(tmp, files, None if adapter_only else dense_weights(model))
    if (run / "eval").is_dir():
        shutil.copytree(run / "eval", tmp / "eval", ignore=shutil.ignore_patterns("*.tmp"))
    if (run / RECIPE_NAME).is_file():
        shutil.copy2(run / RECIPE_NAME, tmp / RECIPE_NAME)
    leftovers = [p.name for p in tmp.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    if leftovers:
        raise ExportError(f"refusing to export pickle files {leftovers}")
    render_card(tmp, repo_id=repo_id, license=license, local_path=str(out)).save(tmp / "README.md")


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    adapter_only: bool = False,
    overwrite: bool = False,
    repo_id: str | None = None,
    license: str | None = None,
) -> Path:
    """Write the export folder (see the module docstring) and return its path."""
    check_export(run_dir, out_dir, adapter_only, overwrite)
    run, out = Path(run_dir), Path(out_dir)
    return write_folder_atomically(out, lambda tmp: _write_folder(run, tmp, out, adapter_only, repo_id, license))
