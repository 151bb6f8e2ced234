"""Frozen teachers for teacher-preserving Matryoshka fine-tuning (``teacher_model`` / ``teacher_cache``).

- ``initial``: a frozen copy of the starting checkpoint; it reads the student's tokenized batch as is.
- a path or Hub id: another embedding model (a mipic export, a sentence-transformers folder or any encoder
  or decoder), with its own tokenizer and width.
- a cache file (``python -m mipic_hf.teacher_cache``): precomputed full-width teacher embeddings keyed by the
  SHA-256 of each text, for teachers too big to run beside the student.

A teacher runs under ``no_grad`` in eval mode, once per text column per step, on the student's batch; its
parameters never require grad and are not in the optimizer. It returns full-width unit vectors (float32)
and, when it shares the student's tokenizer, the last-layer token states (for the token CKA part).
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CACHE_FORMAT = "mipic-teacher-cache-v1"


def text_key(text: str) -> bytes:
    """The cache key of a text: SHA-256 of its UTF-8 bytes (32 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass
class TeacherOutput:
    """Per text column: ``embeddings`` (B, D_t) unit float32; ``token_states`` (B, m, D_t) or None."""

    embeddings: list[torch.Tensor]
    token_states: list[torch.Tensor] | None = None


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_teacher_model(name: str, **kwargs: Any) -> tuple[nn.Module, Any]:
    """(MatryoshkaModel, tokenizer) of a teacher: a mipic folder as saved, anything else through from_backbone."""
    from transformers import AutoTokenizer

    from ..hub.folders import is_mipic_folder
    from ..modeling_mipic import MatryoshkaModel

    if is_mipic_folder(name):
        model = MatryoshkaModel.from_pretrained(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, config=model.config.text_config)
    else:
        model = MatryoshkaModel.from_backbone(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name)
    return freeze(model), tokenizer


class LiveTeacher:
    """A frozen MatryoshkaModel run beside the student.

    Args:
        model: the teacher (frozen here).
        tokenizer: its tokenizer, or None when it shares the student's (then the student's batch is reused).
        max_length: truncation when it tokenizes the texts itself.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, max_length: int | None = None) -> None:
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def shares_tokenizer(self) -> bool:
        return self.tokenizer is None

    def to(self, device: torch.device | str) -> LiveTeacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, features: list[dict[str, torch.Tensor]], texts: list[list[str]]) -> TeacherOutput:
        was_training = self.model.training
        self.model.eval()
        embeddings, tokens = [], []
        width = int(self.model.config.text_config.hidden_size)
        layer = int(self.model.config.text_config.num_hidden_layers)
        device = next(self.model.parameters()).device
        for batch, column in zip(features, texts, strict=True):
            if not self.shares_tokenizer:
                batch = self.tokenizer(
                    column, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
            batch = {k: v.to(device) for k, v in batch.items()}
            out = self.model(**batch, dimension=width, layer=layer)
            embeddings.append(nn.functional.normalize(out.embeddings.float(), dim=-1))
            tokens.append(out.last_hidden_state)
        self.model.train(was_training)
        return TeacherOutput(embeddings, tokens if self.shares_tokenizer else None)


class CachedTeacher:
    """Teacher embeddings read from a cache file written by :func:`write_cache`."""

    def __init__(self, path: str | os.PathLike) -> None:
        if not os.path.isfile(path):
            raise ValueError(f"teacher_cache '{path}' does not exist (write it with python -m mipic_hf.teacher_cache)")
        tensors = load_file(str(path))
        if set(tensors) != {"embeddings", "hashes"}:
            raise ValueError(f"teacher_cache '{path}' is not a mipic teacher cache (tensors {sorted(tensors)})")
        self.path = str(path)
        self.embeddings = tensors["embeddings"].float()
        self.index = {bytes(row.tolist()): i for i, row in enumerate(tensors["hashes"])}
        self.shares_tokenizer = False

    def to(self, device: torch.device | str) -> CachedTeacher:
        self.embeddings = self.embeddings.to(device)
        return self

    def __call__(self, features: list[dict[str, torch.Tensor]], texts: list[list[str]]) -> TeacherOutput:
        out = []
        for column in texts:
            rows = [self.index.get(text_key(t)) for t in column]
            missing = [t for t, r in zip(column, rows, strict=True) if r is None]
            if missing:
                raise ValueError(
                    f"teacher_cache '{self.path}' lacks {len(missing)} text(s) of this batch (first: "
                    f"{missing[0][:60]!r}); rebuild it for this data with python -m mipic_hf.teacher_cache"
                )
            out.append(self.embeddings[torch.tensor(rows, device=self.embeddings.device)])
        return TeacherOutput(out, None)


class TeacherTerm:
    """The teacher's term of a batch, ``term(encoded, features, texts) -> scalar``: the relational loss of the
    student's pooled prefixes to the frozen teacher's full width, each text column once (SimCSE's second view is
    the same texts), at the last layer or at each of ``layers``, averaged.

    Args:
        teacher: a LiveTeacher or CachedTeacher.
        loss: a TeacherRelationLoss.
        weight: its weight in the total loss.
        layers: the exit layers the term applies to (empty: the last layer).
        token_cka: compare last-layer token states too (a live teacher with the student's tokenizer).
    """

    def __init__(
        self, teacher: Any, loss: nn.Module, weight: float, layers: list[int] | None = None, token_cka: bool = False
    ) -> None:
        self.teacher = teacher
        self.loss = loss
        self.weight = weight
        self.layers = list(layers or [])
        self.token_cka = token_cka

    def to(self, device: torch.device | str) -> TeacherTerm:
        self.teacher.to(device)
        return self

    def embed(self, features: list[dict[str, torch.Tensor]], texts: Any, size: int) -> TeacherOutput:
        """The teacher's embeddings of each text column, ``size`` rows at a time (gradient caching; no token
        states)."""
        if texts is None:
            raise ValueError("a teacher needs the raw texts in the batch (MatryoshkaDataCollator passes them)")
        from .grad_cache import split_rows

        columns = []
        for batch, column in zip(features, texts, strict=True):
            parts = [self.teacher([mini], [column[rows]]).embeddings[0] for rows, mini in split_rows(batch, size)]
            columns.append(torch.cat(parts))
        return TeacherOutput(columns, None)

    def __call__(
        self,
        encoded: list[Any],
        features: list[dict[str, torch.Tensor]],
        texts: Any,
        taught: TeacherOutput | None = None,
    ) -> torch.Tensor:
        if texts is None:
            raise ValueError("a teacher needs the raw texts in the batch (MatryoshkaDataCollator passes them)")
        taught = self.teacher(features, texts) if taught is None else taught
        students = encoded[: len(features)]
        token_pairs = None
        if taught.token_states is not None and self.token_cka:
            token_pairs = [
                (s.last_hidden_state, t, s.attention_mask) for s, t in zip(students, taught.token_states, strict=True)
            ]
        target = torch.cat(taught.embeddings)
        terms = []
        for layer in self.layers or [None]:  # None: the last layer
            last = layer is None or layer == students[0].num_layers
            student = torch.cat([s.pooled(None if last else layer) for s in students])
            terms.append(self.loss(student, target, token_pairs if last else None)["teacher"])
        return torch.stack(terms).mean()


def build_teacher(
    args: Any, student: nn.Module, student_tokenizer: Any = None, max_length: int | None = None
) -> LiveTeacher | CachedTeacher | None:
    """The teacher ``args.teacher_cache`` / ``args.teacher_model`` asks for (None when neither is set)."""
    if getattr(args, "teacher_cache", None):
        return CachedTeacher(args.teacher_cache)
    name = getattr(args, "teacher_model", None)
    if not name:
        return None
    if name == "initial":
        return LiveTeacher(copy.deepcopy(student))
    model, tokenizer = load_teacher_model(name)
    same = student_tokenizer is not None and type(tokenizer) is type(student_tokenizer)
    same = same and tokenizer.get_vocab() == student_tokenizer.get_vocab()
    return LiveTeacher(model, None if same else tokenizer, max_length=max_length)


def write_cache(
    model: nn.Module,
    tokenizer: Any,
    texts: list[str],
    path: str | os.PathLike,
    batch_size: int = 64,
    max_length: int | None = None,
) -> int:
    """Embed each distinct text once at the teacher's full width and write the cache; returns the count."""
    unique = list(dict.fromkeys(texts))
    width = int(model.config.text_config.hidden_size)
    layer = int(model.config.text_config.num_hidden_layers)
    vectors = model.encode(
        unique,
        tokenizer,
        dimension=width,
        layer=layer,
        batch_size=batch_size,
        max_length=max_length,
        convert_to_tensor=True,
    )
    hashes = torch.tensor([list(text_key(t)) for t in unique], dtype=torch.uint8)
    save_file(
        {"embeddings": nn.functional.normalize(vectors.float(), dim=-1).cpu().contiguous(), "hashes": hashes},
        str(path),
        metadata={"format": CACHE_FORMAT, "max_length": str(max_length), "width": str(width)},
    )
    return len(unique)
