"""``load_benchmark``: a named evaluation set, from the local files first, the Hub otherwise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import datasets

from .common import check_max_samples, default_data_dir, normalize_split, offline_switch, take_head
from .hub import from_hub
from .local import LOCAL
from .registry import BENCHMARKS, HUB_SPLITS, BenchmarkSpec, NotLocal


def _spec(name: str) -> BenchmarkSpec:
    key = str(name).lower()
    if key not in BENCHMARKS:
        raise ValueError(f"benchmark {name!r} is unknown; choose one of {list(BENCHMARKS)}")
    return BENCHMARKS[key]


def resolve_root(data_dir: str | Path | None) -> Path | None:
    if data_dir is None:
        return default_data_dir()
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise ValueError(f"data_dir '{path}' does not exist or is not a folder")
    return path


def local_or_hub(
    spec: BenchmarkSpec,
    split: str,
    root: Path | None,
    local: Callable[[Path, str], datasets.Dataset] | None,
    hub: Callable[[], datasets.Dataset],
) -> datasets.Dataset:
    """Read the local files when the data dir has them, else the Hub copy (a one-line error when offline)."""
    missing: Path | None = None
    if root is not None and local is not None:
        try:
            return local(root, split)
        except NotLocal as err:
            missing = err.path
    if not spec.local:
        var = offline_switch()
        if var:
            raise ValueError(
                f"benchmark {spec.name!r} is hub-only ({spec.hub_id}) and {var} is set, so it cannot be loaded offline"
            )
        return hub()
    where = f"no local file {missing}" if missing else "no data dir (pass data_dir= or set MIPIC_DATA_DIR)"
    hub_splits = HUB_SPLITS.get(spec.name, spec.splits)
    if split not in hub_splits:
        raise ValueError(
            f"benchmark {spec.name!r} split {split!r} is only available locally ({where}); "
            f"the Hub copy {spec.hub_id} has splits {list(hub_splits)}"
        )
    var = offline_switch()
    if var:
        raise ValueError(
            f"benchmark {spec.name!r} split {split!r}: {where}, and {var} is set so the Hub copy {spec.hub_id} "
            "cannot be loaded; point MIPIC_DATA_DIR at a data folder"
        )
    return hub()


def load_benchmark(
    name: str, split: str = "test", data_dir: str | Path | None = None, max_samples: int | None = None
) -> datasets.Dataset:
    """Rows with standard columns: sts -> sentence1, sentence2, score (float); classification -> text, label
    (int; a ClassLabel feature with the class names when known); pair_classification -> sentence1, sentence2,
    label (0/1). snli as a train set -> anchor, positive, negative triplets (local: the triplets tsv).

    Local files (``data_dir``, else ``$MIPIC_DATA_DIR``; layout in the module docstring) come first, the Hub copy
    (``BENCHMARKS[name].hub_id``) otherwise. Scores keep the source's scale (local STS-B 0-5, its Hub copy 0-1).
    ``split``: train | validation (alias dev) | test, as ``BENCHMARKS[name].splits`` allows; ``max_samples``
    keeps the first N rows.
    """
    spec = _spec(name)
    if spec.task == "retrieval":
        raise ValueError(
            f"benchmark {spec.name!r} is a retrieval set: load it with mipic_hf.data.retrieval.load_retrieval"
        )
    split = normalize_split(split, spec.splits, f"benchmark {spec.name!r}")
    check_max_samples(max_samples)
    root = resolve_root(data_dir)
    dataset = local_or_hub(spec, split, root, LOCAL.get(spec.name), lambda: from_hub(spec, split))
    return take_head(dataset, max_samples)
