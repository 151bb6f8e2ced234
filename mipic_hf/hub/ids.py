"""Hub repo ids: one rule for every place that takes one (``--repo_id``, ``hub.hub_model_id``, a card's base model)."""

from __future__ import annotations

import os

from huggingface_hub.utils import HFValidationError, validate_repo_id


def is_repo_id(name: str | None) -> bool:
    """``org/name`` as the Hub accepts it (huggingface_hub's own character and length rules)."""
    if not name or name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def is_hub_id(name: str | None) -> bool:
    """A Hub repo id (``org/name``) that is not also a local path."""
    return is_repo_id(name) and not os.path.isabs(name) and not os.path.exists(name)
