"""The quality benchmark's selection rules, each written in code before the runs it judges: they read the raw
results (``{method: {seed: eval_results}}``) and name a pick or a verdict; the report prints them."""

from __future__ import annotations

import statistics

from quality_registry import CANDIDATES, SEEDS, TEACHER, TEACHER_CANDIDATES, TEACHER_DEFAULTS


def cell(result: dict, task: str, layer: int, dim: int) -> float:
    return result["tasks"][task]["scores"][f"L{layer}"][f"D{dim}"]["spearman"]


def grid_average(result: dict, task: str, keep=lambda layer, dim: True) -> float:
    """Mean Spearman over the (layer, dim) cells that ``keep`` accepts."""
    scores = result["tasks"][task]["scores"]
    return statistics.mean(
        v["spearman"] for lk, dims in scores.items() for dk, v in dims.items() if keep(int(lk[1:]), int(dk[1:]))
    )


def last_exit(result: dict, task: str = "stsb") -> tuple[int, list[int]]:
    """The last exit layer ``result`` scored on ``task``, and the dims scored there."""
    scores = result["tasks"][task]["scores"]
    last = max(int(key[1:]) for key in scores)
    return last, sorted(int(key[1:]) for key in scores[f"L{last}"])


def small(layer: int, dim: int) -> bool:
    return dim <= 64


def select_default(
    found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS, candidates: list[str] = CANDIDATES
) -> str | None:
    """The dev selection rule, fixed before any test number is read: among ``candidates`` (the first is the base;
    round 2: `mipic_t1_mean` and the `cand_*` variants) run on STS-B dev with every seed of ``seeds``, the best
    mean over seeds of the grid average over dims <= 64 (all exit layers); ties go to the best all-cells average."""
    done = {m: runs for m, runs in found.items() if m in candidates and all(s in runs for s in seeds)}
    if candidates[0] not in done:
        return None

    def key(method: str) -> tuple[float, float]:
        runs = [done[method][s] for s in seeds]
        return (
            round(statistics.mean(grid_average(r, "stsb", small) for r in runs), 2),
            statistics.mean(grid_average(r, "stsb") for r in runs),
        )

    return max(done, key=key)


def teacher_gaps(found: dict[str, dict[int, dict]], method: str) -> tuple[list[float], list[float]]:
    """Per seed: the smallest (score - untrained) over dims at the last exit, and the mean score over d <= 32."""
    base = next(iter(found["untrained"].values()))
    last, dims = last_exit(base)
    gaps, means = [], []
    for run in found[method].values():
        gaps.append(min(cell(run, "stsb", last, d) - cell(base, "stsb", last, d) for d in dims))
        means.append(statistics.mean(cell(run, "stsb", last, d) for d in dims if d <= 32))
    return gaps, means


def select_teacher(found: dict[str, dict[int, dict]], candidates: list[str] | None = None) -> str | None:
    """The teacher dev rule, fixed before any test number is read: among the teacher candidates run on STS-B dev,
    those keeping every dim at the last exit >= the untrained checkpoint (mean over seeds of the smallest gap
    >= 0) come first; then the best mean over d <= 32 at the last exit."""
    candidates = [m for m in (candidates or TEACHER + TEACHER_CANDIDATES) if m in found]
    if "untrained" not in found or not candidates:
        return None

    def key(method: str) -> tuple[bool, float]:
        gaps, means = teacher_gaps(found, method)
        return statistics.mean(gaps) >= 0, round(statistics.mean(means), 2)

    return max(candidates, key=key)


TERM_MIN_GAIN = 0.3  # issue 14: a term stays in `default` only if removing it costs this much on dev
TERM_BASE = "mipic_default_teacher"
TERM_ABLATIONS = {"SIA": "t_abl_no_sia", "PIC": "t_abl_no_pic", "rung task loss": "t_abl_no_rung"}


def dev_aggregate(result: dict) -> float:
    """The dev aggregate terms are judged on: STS-B dev Spearman averaged over every (exit layer, dim) cell."""
    return grid_average(result, "stsb")


def term_gains(
    found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS, base: str = TERM_BASE
) -> dict[str, tuple[float | None, bool | None]]:
    """The term rule, fixed before the runs: per term, (mean over ``seeds`` of base - ablation on the dev
    aggregate, whether it earns its place: >= TERM_MIN_GAIN). (None, None) until every seed of both ran."""
    verdicts: dict[str, tuple[float | None, bool | None]] = {}
    for term, ablation in TERM_ABLATIONS.items():
        runs = found.get(base, {}), found.get(ablation, {})
        if not all(s in runs[0] and s in runs[1] for s in seeds):
            verdicts[term] = (None, None)
            continue
        gain = statistics.mean(dev_aggregate(runs[0][s]) - dev_aggregate(runs[1][s]) for s in seeds)
        verdicts[term] = (round(gain, 2), round(gain, 2) >= TERM_MIN_GAIN)  # as the table shows it
    return verdicts


# issue 14, reshaped terms (one change each on TERM_BASE, which keeps SIA and PIC): each is judged against the run
# without the term it reshapes, so a reshape must earn what its term failed to
RESHAPED = {"t_lift_random": "t_abl_no_sia", "t_pic_mean": "t_abl_no_pic", "t_teacher_token_cka": TERM_BASE}


def reshape_gains(
    found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS
) -> dict[str, tuple[list[float], str | None]]:
    """The reshape rule, fixed before the runs: per reshaped candidate, the dev aggregate it gains over the run
    without its term, per seed run so far, and a verdict: "advance" (seed 42 alone gains >= TERM_MIN_GAIN: run
    seeds 43 and 44), "stop" (it does not), "earns" / "fails" (every seed ran: the mean gain is >= TERM_MIN_GAIN or
    not; only "earns" brings the term back into `default`). None before seed 42 ran."""
    out: dict[str, tuple[list[float], str | None]] = {}
    for candidate, without in RESHAPED.items():
        runs, refs = found.get(candidate, {}), found.get(without, {})
        ran = [s for s in seeds if s in runs and s in refs]
        gains = [round(dev_aggregate(runs[s]) - dev_aggregate(refs[s]), 2) for s in ran]
        if seeds[0] not in ran:
            verdict = None
        elif len(ran) == len(seeds):
            verdict = "earns" if round(statistics.mean(gains), 2) >= TERM_MIN_GAIN else "fails"
        else:
            verdict = "advance" if gains[0] >= TERM_MIN_GAIN else "stop"
        out[candidate] = (gains, verdict)
    return out


# issue 16: a speed setting and the recipe it must not move (t_final_cached added before its runs, same rule)
SPEED_VARIANTS = {"t_final_grouped": "t_final", "t_final_cached": "t_final"}
SPEED_MAX_MOVE = 0.3  # the same bar a term must clear to count as a change (TERM_MIN_GAIN)


def same_quality(
    found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS
) -> dict[str, tuple[float | None, bool | None]]:
    """The speed rule, fixed before the runs: per speed variant, the 3-seed mean of (variant - base) dev aggregate
    and whether it stays within SPEED_MAX_MOVE of the base; (None, None) until every seed of both ran."""
    out: dict[str, tuple[float | None, bool | None]] = {}
    for variant, base in SPEED_VARIANTS.items():
        runs, refs = found.get(variant, {}), found.get(base, {})
        if not all(s in runs and s in refs for s in seeds):
            out[variant] = (None, None)
            continue
        move = round(statistics.mean(dev_aggregate(runs[s]) - dev_aggregate(refs[s]) for s in seeds), 2)
        out[variant] = (move, abs(move) <= SPEED_MAX_MOVE)
    return out


ROTATION_OPTIONS = {"none": TERM_BASE, "before": "t_rot_before", "after": "mipic_default_teacher_pca"}


def select_rotation(found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS) -> str | None:
    """The output-rotation rule, fixed before the runs: among none / before / after training on the best recipe,
    the best dev aggregate (mean over ``seeds``); ties go to none. None until every option has every seed."""
    runs = {option: found.get(method, {}) for option, method in ROTATION_OPTIONS.items()}
    if not all(s in r for r in runs.values() for s in seeds):
        return None
    means = {o: round(statistics.mean(dev_aggregate(r[s]) for s in seeds), 2) for o, r in runs.items()}
    return max(means, key=lambda o: (means[o], o == "none"))


NOLABEL_CANDIDATES = ["nolabel_teacher", "nolabel_last_exit", "nolabel_tau005", "nolabel_mse"]


def nolabel_margin(found: dict[str, dict[int, dict]], method: str, seeds: list[int]) -> float:
    """Mean over ``seeds`` of the smallest (score - max(untrained, untrained_pca)) over the dims at the last exit:
    >= 0 means the no-label goal (every dim at or above both anchors) holds."""
    anchors = [next(iter(found[a].values())) for a in ("untrained", "untrained_pca")]
    last, dims = last_exit(anchors[0])
    return statistics.mean(
        min(cell(found[method][s], "stsb", last, d) - max(cell(a, "stsb", last, d) for a in anchors) for d in dims)
        for s in seeds
    )


def select_nolabel(found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS[:1]) -> str | None:
    """The no-label rule, fixed before the dev runs: among NOLABEL_CANDIDATES run on STS-B dev with every seed of
    ``seeds``, the largest :func:`nolabel_margin` (ties to the first); None until one has run."""
    done = [m for m in NOLABEL_CANDIDATES if all(s in found.get(m, {}) for s in seeds)]
    if not done or not all(a in found for a in ("untrained", "untrained_pca")):
        return None
    return max(done, key=lambda m: (round(nolabel_margin(found, m, seeds), 2), -done.index(m)))


def anchor_gaps(found: dict[str, dict[int, dict]], method: str, task: str = "stsb") -> dict[str, list[float]]:
    """Per anchor row (`untrained`, `untrained_pca`): the smallest (score - anchor) over the dims at the last
    exit, one value per seed of ``method``."""
    gaps: dict[str, list[float]] = {}
    for anchor in ("untrained", "untrained_pca"):
        if anchor not in found:
            continue
        ref = next(iter(found[anchor].values()))
        last, dims = last_exit(ref, task)
        gaps[anchor] = [
            min(cell(run, task, last, d) - cell(ref, task, last, d) for d in dims)
            for run in found[method].values()
            if task in run["tasks"]
        ]
    return gaps


def teacher_key(found: dict[str, dict[int, dict]], method: str, seeds: list[int]) -> tuple[bool, float]:
    """select_teacher's key over ``seeds``: (mean smallest last-exit gap to the untrained checkpoint >= 0, mean
    score over d <= 32 at the last exit, rounded as the table shows it)."""
    runs = {s: found[method][s] for s in seeds}
    gaps, means = teacher_gaps({"untrained": found["untrained"], method: runs}, method)
    return statistics.mean(gaps) >= 0, round(statistics.mean(means), 2)


def teacher_default_rule(
    found: dict[str, dict[int, dict]], candidates: list[str] = TEACHER_DEFAULTS, seeds: list[int] = SEEDS
) -> tuple[list[str], str | None]:
    """The teacher-defaults rule (issue 29), fixed before its runs. Stage 1, seed ``seeds[0]``: a candidate
    advances when its :func:`teacher_key` beats the defaults' (``candidates[0]``) and its mean over d <= 32 gains at
    least TERM_MIN_GAIN. Stage 2: the defaults and every advanced candidate run the other seeds; the pick is the
    best teacher_key over all ``seeds``, ties to the defaults (they change only for a 3-seed win). Returns (the
    advanced candidates, the pick); the pick is None until every needed run exists."""
    first = seeds[:1]
    if "untrained" not in found or not all(s in found.get(m, {}) for m in candidates for s in first):
        return [], None
    default = teacher_key(found, candidates[0], first)
    advanced = []
    for method in candidates[1:]:
        key = teacher_key(found, method, first)
        if key > default and key[1] - default[1] >= TERM_MIN_GAIN:
            advanced.append(method)
    finalists = [candidates[0], *advanced]
    if not all(s in found.get(m, {}) for m in finalists for s in seeds):
        return advanced, None
    return advanced, max(finalists, key=lambda m: teacher_key(found, m, seeds))  # max keeps the first of a tie
