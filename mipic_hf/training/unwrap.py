"""Find the MatryoshkaModel inside the wrappers training adds (DDP / accelerate ``.module``, PEFT, the
``TrainingModule`` the Trainer holds)."""

from __future__ import annotations

from typing import Any


def find_matryoshka_model(model: Any, max_depth: int = 5) -> Any | None:
    """The innermost object with ``pool``, ``encode`` and a Matryoshka config, or None."""
    seen = model
    for _ in range(max_depth):
        config = getattr(seen, "config", None)
        if hasattr(seen, "pool") and hasattr(seen, "encode") and hasattr(config, "matryoshka_dimensions"):
            return seen
        if hasattr(seen, "module"):
            seen = seen.module
        elif hasattr(seen, "get_base_model"):
            seen = seen.get_base_model()
        elif hasattr(seen, "objective") and hasattr(seen, "encoder"):  # training.module.TrainingModule
            seen = seen.encoder
        else:
            return None
    return None


def matryoshka_model(model: Any) -> Any:
    """The MatryoshkaModel inside the wrappers; ValueError naming the type when there is none."""
    found = find_matryoshka_model(model)
    if found is None:
        raise ValueError(f"MIPICTrainer needs a MatryoshkaModel, got {type(model).__name__}")
    return found
