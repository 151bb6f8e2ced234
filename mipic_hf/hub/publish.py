"""Uploads an export folder or a standard budget folder (``mipic_hf.export``, ``--standard``) to the Hub with
``HfApi.create_repo`` + ``upload_folder``. A standard folder goes to a repo of its own: TEI, vLLM and Infinity
take a repo id (and a revision) and read config.json at the repo's root, so neither a subfolder nor a branch per
budget is served by all of them, and a branch is invisible to the Hub's model page and search.
The token comes from ``HF_TOKEN`` or the stored login (``hf auth login``) and is never
printed. Without a token or without network the command fails with one line and the folder is untouched;
when the card names another repo id, README.md is rendered again for ``--repo_id`` before the upload.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..data.common import offline_switch
from .card import render_card
from .folders import is_mipic_folder
from .ids import is_repo_id
from .standard import BUDGET_KEY, is_standard_folder, render_standard_card


class PublishError(RuntimeError):
    """Publishing failed; the message never contains the token."""


def resolve_token(token: str | None = None) -> str:
    """``token``, else HF_TOKEN, else the stored login; PublishError when there is none."""
    from huggingface_hub import get_token

    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (needs write access)")
    return token


def check_publishable(folder: str | Path, repo_id: str) -> None:
    """The folder is an export and the repo id is valid (before any network call)."""
    folder = Path(folder)
    if not is_repo_id(repo_id):
        raise PublishError(f"--repo_id must be 'org/name', got {repo_id!r}")
    if not is_mipic_folder(folder) and not is_standard_folder(folder):
        raise PublishError(
            f"'{folder}' is neither an export folder nor a standard folder (python -m mipic_hf.export RUN_DIR OUT_DIR "
            "[--standard])"
        )
    if not (folder / "README.md").is_file():
        raise PublishError(f"'{folder}' has no README.md model card; export it again")


def _card_repo_id(folder: Path) -> str | None:
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md").data.model_name


def _commit_message(folder: Path, config: dict[str, Any]) -> str:
    if BUDGET_KEY in config:
        budget = config[BUDGET_KEY]
        return f"mipic-hf: upload the standard folder of budget layer {budget['layer']}, dim {budget['dimension']}"
    training = config.get("mipic_training") or {}
    run = training.get("run_name") or folder.name
    return f"mipic-hf: upload run {run} ({training.get('method', 'mipic')}, {training.get('preset', '-')})"


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    api: Any = None,
) -> str:
    """Upload ``folder`` to ``repo_id`` (created if missing); returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    folder = Path(folder)
    check_publishable(folder, repo_id)
    if offline_switch(datasets=False):
        raise PublishError("publishing needs the network, but HF_HUB_OFFLINE is set")
    token = resolve_token(token)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    commit_message = commit_message or _commit_message(folder, config)
    api = api if api is not None else HfApi(token=token)
    card = folder / "README.md"
    old_card = card.read_text(encoding="utf-8")
    try:
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True, token=token)
        if revision:
            api.create_branch(repo_id=repo_id, branch=revision, repo_type="model", exist_ok=True, token=token)
        if _card_repo_id(folder) != repo_id:
            render = render_standard_card if BUDGET_KEY in config else render_card
            render(folder, repo_id=repo_id).save(card)
            print(f"model card: usage snippets now name {repo_id}")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
            token=token,
        )
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as err:
        card.write_text(old_card, encoding="utf-8")
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PublishError(f"upload to {repo_id} failed: {message.replace(token, '***')}") from None
    return str(getattr(info, "commit_url", info))
