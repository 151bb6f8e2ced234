"""Recipes: YAML (+ command-line overrides) parsed into dataclasses, checked and resolved into a ``Plan`` before
any work, then run (train, save, evaluate, export, push)."""

from .arguments import RecipeError
from .parser import flatten_recipe, parse_recipe

__all__ = ["RecipeError", "flatten_recipe", "parse_recipe"]
