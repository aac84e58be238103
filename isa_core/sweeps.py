"""Sweeps: a TOML spec expanded into runs, each run's folder and state, and result rows.

A spec has ``[sweep]`` (``name``, ``data``), ``[base]`` (train flags every run shares),
``[methods.NAME]`` (named flag sets), ``[grid]`` (lists whose Cartesian product gives the runs;
``method`` picks a method, any other key is a train flag) and an optional ``[eval]`` (flags of
`isa mig`). Flags use the long names of `isa train` with underscores or dashes
(``batch_size`` or ``batch-size``). A run's id is a stable slug of its grid values, e.g.
``isa-vae_beta2_seed7``; its folder is ``OUT/runs/ID/``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from isa_core.errors import IsaError

__all__ = ["Run", "SweepSpec", "load_spec", "run_state", "select_representatives"]

TRAIN_FLAGS = {
    "data",
    "prior",
    "layout",
    "p0",
    "p1",
    "scale",
    "tree",
    "objective",
    "beta",
    "gamma",
    "estimator",
    "learn_exponents",
    "exponent_lr",
    "closed_form_kl",
    "arch",
    "latent_dim",
    "epochs",
    "steps",
    "batch_size",
    "lr",
    "anneal_steps",
    "seed",
    "device",
    "checkpoint_every",
    "log_every",
}
EVAL_FLAGS = {"estimator", "factors", "samples", "bins", "seed", "group"}
SECTIONS = {"sweep", "base", "methods", "grid", "eval"}


def _flag(name: str) -> str:
    return name.replace("-", "_")


def _slug_value(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text)


@dataclass(frozen=True)
class Run:
    """One run: its id, grid values and the full `isa train` flags."""

    id: str
    grid: dict[str, Any]
    method: str | None
    flags: dict[str, Any]

    def train_args(self, folder: Path) -> list[str]:
        """Command-line arguments of `isa train` for this run."""
        args = ["train", "-o", str(folder)]
        for name, value in self.flags.items():
            option = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                args.append(option if value else "--no-" + name.replace("_", "-"))
            else:
                args += [option, str(value)]
        return args


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    grid: dict[str, list[Any]]
    eval: dict[str, Any] = field(default_factory=dict)

    def runs(self) -> list[Run]:
        """The Cartesian product of the grid, in the order the grid lists its keys."""
        keys = list(self.grid)
        runs = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            method = point.get("method")
            flags = dict(self.base)
            if method is not None:
                flags.update(self.methods[method])
            flags.update({k: v for k, v in point.items() if k != "method"})
            parts = [str(method)] if method is not None else []
            parts += [f"{k}{_slug_value(v)}" for k, v in point.items() if k != "method"]
            runs.append(Run("_".join(parts) or "run", point, method, flags))
        ids = [r.id for r in runs]
        if len(set(ids)) != len(ids):
            raise IsaError("two runs of the grid get the same id; make the grid values distinct")
        return runs


def _check_flags(section: str, flags: dict[str, Any], allowed: set[str], source: Path) -> dict:
    checked = {}
    for key, value in flags.items():
        name = _flag(key)
        if name not in allowed:
            raise IsaError(
                f"{source}: [{section}] has {key!r}, which is not a flag of "
                f"`isa {'mig' if section == 'eval' else 'train'}`"
            )
        if isinstance(value, (dict, list)):
            raise IsaError(f"{source}: [{section}] {key} must be a single value, not {value!r}")
        checked[name] = value
    return checked


def load_spec(path: Path | str) -> SweepSpec:
    """Read and validate a sweep spec; every problem is one IsaError before anything runs."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise IsaError(f"{path}: no such sweep spec") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise IsaError(f"{path} is not valid TOML ({error})") from None
    unknown = set(raw) - SECTIONS
    if unknown:
        raise IsaError(
            f"{path}: unknown section(s) {', '.join(sorted(unknown))}; "
            f"use {', '.join(sorted(SECTIONS))}"
        )
    sweep = raw.get("sweep", {})
    extra = set(sweep) - {"name", "data"}
    if extra:
        raise IsaError(f"{path}: [sweep] takes name and data, not {', '.join(sorted(extra))}")
    base = _check_flags("base", raw.get("base", {}), TRAIN_FLAGS, path)
    if "data" in sweep:
        base.setdefault("data", sweep["data"])
    methods = {}
    for name, flags in raw.get("methods", {}).items():
        if not isinstance(flags, dict):
            raise IsaError(f"{path}: [methods.{name}] must be a table of flags")
        methods[name] = _check_flags(f"methods.{name}", flags, TRAIN_FLAGS, path)
    grid_raw = raw.get("grid", {})
    if not grid_raw:
        raise IsaError(f"{path}: [grid] is empty; list at least one key, e.g. seed = [0, 1]")
    grid: dict[str, list[Any]] = {}
    for key, values in grid_raw.items():
        name = _flag(key)
        if name != "method" and name not in TRAIN_FLAGS:
            raise IsaError(f"{path}: [grid] has {key!r}, which is not a flag of `isa train`")
        if not isinstance(values, list) or not values:
            raise IsaError(f"{path}: [grid] {key} must be a non-empty list")
        if len({json.dumps(v) for v in values}) != len(values):
            raise IsaError(f"{path}: [grid] {key} lists a value twice")
        grid[name] = values
    for method in grid.get("method", []):
        if method not in methods:
            raise IsaError(f"{path}: [grid] method {method!r} has no [methods.{method}] table")
    evaluation = _check_flags("eval", raw.get("eval", {}), EVAL_FLAGS, path)
    return SweepSpec(str(sweep.get("name", path.stem)), base, methods, grid, evaluation)


def run_state(folder: Path) -> dict[str, Any]:
    """State of a run folder: pending, running (or interrupted), done or failed, with details."""
    state: dict[str, Any] = {"state": "pending", "step": 0}
    metrics = folder / "metrics.jsonl"
    if metrics.exists():
        lines = metrics.read_text().splitlines()
        if lines:
            try:
                last = json.loads(lines[-1])
                state.update(step=last.get("step", 0), loss=last.get("loss"))
            except json.JSONDecodeError:
                pass
        state["state"] = "running"
    if (folder / "error.txt").exists():
        state["state"] = "failed"
        state["error"] = (folder / "error.txt").read_text().strip().splitlines()[-1:] or [""]
        state["error"] = state["error"][0]
    if (folder / "result.json").exists():
        state["state"] = "done"
    return state


def select_representatives(
    rows: list[dict[str, Any]], by: list[str], quantile: float = 0.5
) -> list[dict[str, Any]]:
    """The paper's representative model per group (appendix A.5).

    Within each group (rows sharing the ``by`` values), keep the runs whose MIG is at least the
    group's ``quantile``-quantile of MIG (the upper part), take the mean and the variance of MIG
    and of logpx over those runs, and choose the kept run with the smallest Mahalanobis
    distance to that mean under the diagonal covariance (a variance of zero counts as one, so
    a group of identical or single runs picks its first run at distance 0).
    """
    if not 0 <= quantile < 1:
        raise IsaError(f"--quantile must lie in [0, 1), got {quantile}")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        missing = [key for key in (*by, "mig", "logpx") if row.get(key) is None]
        if missing:
            raise IsaError(f"run {row.get('id', '?')} has no {', '.join(missing)}")
        groups.setdefault(tuple(row[key] for key in by), []).append(row)
    chosen = []
    for key, members in groups.items():
        migs = sorted(r["mig"] for r in members)
        threshold = _quantile(migs, quantile)
        kept = [r for r in members if r["mig"] >= threshold]
        points = [(r["mig"], r["logpx"]) for r in kept]
        means = [sum(p[d] for p in points) / len(points) for d in (0, 1)]
        variances = [sum((p[d] - means[d]) ** 2 for p in points) / len(points) for d in (0, 1)]
        variances = [v if v > 0 else 1.0 for v in variances]
        distances = [
            math.sqrt(sum((p[d] - means[d]) ** 2 / variances[d] for d in (0, 1))) for p in points
        ]
        best = min(range(len(kept)), key=lambda i: distances[i])
        chosen.append(
            {
                **dict(zip(by, key, strict=True)),
                "id": kept[best].get("id"),
                "distance": distances[best],
                "mig": kept[best]["mig"],
                "logpx": kept[best]["logpx"],
                "kept": len(kept),
                "runs": len(members),
                "mean_mig": means[0],
                "mean_logpx": means[1],
                "model": kept[best].get("model"),
                "codes": kept[best].get("codes"),
            }
        )
    return chosen


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
