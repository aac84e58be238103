"""Sweeps: a TOML spec expanded into runs, each run's folder and state, and result rows.

A spec has ``[sweep]`` (``name``, ``data``), ``[base]`` (train flags every run shares),
``[methods.NAME]`` (named flag sets), ``[grid]`` (lists whose Cartesian product gives the runs;
``method`` picks a method, any other key is a train flag) and an optional ``[eval]`` (flags of
`isa mig`). Flags use the long names of `isa train` with underscores or dashes
(``batch_size`` or ``batch-size``). A run's id is a stable slug of its grid values, e.g.
``isa-vae_beta2_seed7``; its folder is ``OUT/NAME/runs/ID/``.

Sweep names, method names and run ids become folder names, so they must be safe names
(``SAFE_NAME``, at most ``NAME_MAX`` characters); a run id longer than that keeps its first
characters and ends in a short hash of the whole id, so it stays unique and stable.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from isa_core.errors import IsaError

__all__ = [
    "NAME_MAX",
    "Run",
    "SweepSpec",
    "check_data",
    "check_name",
    "check_result_rows",
    "cpu_cores",
    "filter_runs",
    "load_manifest",
    "load_spec",
    "run_folder",
    "run_state",
    "select_representatives",
    "threads_per_run",
]

# The type of value each flag takes: a spec value of another type is refused when the spec
# is read, not when a run fails. Flags not listed take text (numbers are written as text).
BOOL_FLAGS = {"learn_exponents", "closed_form_kl", "compile"}
INT_FLAGS = {
    "latent_dim",
    "steps",
    "batch_size",
    "anneal_steps",
    "seed",
    "checkpoint_every",
    "log_every",
    "samples",
    "bins",
}
FLOAT_FLAGS = {"p0", "scale", "beta", "gamma", "exponent_lr", "epochs", "lr"}
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
    "precision",
    "compile",
    "checkpoint_every",
    "log_every",
}
EVAL_FLAGS = {"estimator", "factors", "samples", "bins", "seed", "group"}
SECTIONS = {"sweep", "base", "methods", "grid", "eval"}

NAME_MAX = 100
SAFE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")
NAME_RULE = f"use 1 to {NAME_MAX} letters, digits, '.', '_', '+' or '-', not starting with '.'"

# A grid bigger than this is a typo (8 keys of 40 values are 40**8 runs); it is refused before
# it is expanded, since expanding it alone would take hours.
MAX_RUNS = 100_000
# Plausible values in a results row: MIG is a fraction in 0..1 (estimates may stray a little),
# and no log-likelihood, beta or exponent comes near 1e12; bigger values are damage, and their
# squares must not overflow in `isa select`.
MIG_RANGE = (-1.0, 2.0)
MAX_MAGNITUDE = 1e12


def _flag(name: str) -> str:
    return name.replace("-", "_")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_name(what: str, value: Any) -> str:
    """``value`` if it is a safe folder name (no path separators, no leading '.', bounded)."""
    if not isinstance(value, str) or len(value) > NAME_MAX or not SAFE_NAME.fullmatch(value):
        raise IsaError(
            f"{what} {_short(value, NAME_MAX + 20)} is not a safe folder name; {NAME_RULE}"
        )
    return value


def _slug_value(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text)


def _run_id(parts: list[str]) -> str:
    """Join the parts; a long id keeps its first characters and ends in a hash of the whole."""
    text = "_".join(parts) or "run"
    if len(text) > NAME_MAX:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        text = f"{text[: NAME_MAX - len(digest) - 1]}-{digest}"
    return check_name("run id", text)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"the date/time {value.isoformat()}"
    if isinstance(value, bool):
        return str(value).lower()
    return _short(value)


def _check_value(where: str, name: str, value: Any) -> Any:
    """``value`` if flag ``name`` can take it (a string, number or true/false of its type)."""
    if name in BOOL_FLAGS:
        ok, wanted = isinstance(value, bool), "true or false"
    elif isinstance(value, bool):
        ok, wanted = False, "a value, not true/false"
    elif name in INT_FLAGS:
        ok, wanted = isinstance(value, int), "an integer"
    elif name in FLOAT_FLAGS:
        ok, wanted = isinstance(value, (int, float)), "a number"
    else:
        ok, wanted = isinstance(value, (str, int, float)), "a string or a number"
    if not ok:
        option = "--" + name.replace("_", "-")
        raise IsaError(f"{where} {name} is {_describe(value)}, but {option} takes {wanted}")
    return value


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

    def count(self) -> int:
        """How many runs the grid gives (computed without expanding it)."""
        return math.prod(len(values) for values in self.grid.values())

    def runs(self) -> list[Run]:
        """The Cartesian product of the grid, in the order the grid lists its keys."""
        _check_count(self.count(), f"sweep {self.name}")
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
            runs.append(Run(_run_id(parts), point, method, flags))
        ids = [r.id for r in runs]
        if len(set(ids)) != len(ids):
            raise IsaError("two runs of the grid get the same id; make the grid values distinct")
        return runs


def _check_count(count: int, where: str) -> None:
    if count > MAX_RUNS:
        raise IsaError(
            f"{where}: the grid gives {count:,} runs, more than the {MAX_RUNS:,} isa expands; "
            "list fewer values, or split it into several sweeps"
        )


def _table(raw: dict[str, Any], section: str, source: Path) -> dict[str, Any]:
    value = raw.get(section, {})
    if not isinstance(value, dict):
        raise IsaError(
            f"{source}: {section} is {_describe(value)}, not a table; write it as [{section}]"
        )
    return value


def _check_flags(section: str, flags: dict[str, Any], allowed: set[str], source: Path) -> dict:
    checked = {}
    for key, value in flags.items():
        name = _flag(key)
        if name not in allowed:
            raise IsaError(
                f"{source}: [{section}] has {key!r}, which is not a flag of "
                f"`isa {'mig' if section == 'eval' else 'train'}`"
            )
        checked[name] = _check_value(f"{source}: [{section}]", name, value)
    return checked


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
        return tomllib.loads(text)
    except FileNotFoundError:
        raise IsaError(f"{path}: no such sweep spec") from None
    except IsADirectoryError:
        raise IsaError(f"{path} is a folder; give a sweep spec file (TOML)") from None
    except UnicodeDecodeError:
        raise IsaError(f"{path} is not valid TOML (not UTF-8 text); give a sweep spec") from None
    except tomllib.TOMLDecodeError as error:
        raise IsaError(f"{path} is not valid TOML ({error})") from None


def load_spec(path: Path | str) -> SweepSpec:
    """Read and validate a sweep spec; every problem is one IsaError before anything runs."""
    path = Path(path)
    raw = _read_toml(path)
    unknown = set(raw) - SECTIONS
    if unknown:
        raise IsaError(
            f"{path}: unknown section(s) {', '.join(sorted(unknown))}; "
            f"use {', '.join(sorted(SECTIONS))}"
        )
    sweep = _table(raw, "sweep", path)
    extra = set(sweep) - {"name", "data"}
    if extra:
        raise IsaError(f"{path}: [sweep] takes name and data, not {', '.join(sorted(extra))}")
    for key in ("name", "data"):
        if key in sweep and not isinstance(sweep[key], str):
            raise IsaError(f"{path}: [sweep] {key} is {_describe(sweep[key])}; write a string")
    name = sweep.get("name", path.stem)
    where = f"{path}: [sweep] name" if "name" in sweep else f"{path}: the sweep name (file name)"
    check_name(where, name)
    base = _check_flags("base", _table(raw, "base", path), TRAIN_FLAGS, path)
    if "data" in sweep:
        base.setdefault("data", sweep["data"])
    methods = {}
    for method, flags in _table(raw, "methods", path).items():
        check_name(f"{path}: method", method)
        if not isinstance(flags, dict):
            raise IsaError(f"{path}: [methods.{method}] must be a table of flags")
        methods[method] = _check_flags(f"methods.{method}", flags, TRAIN_FLAGS, path)
    grid_raw = _table(raw, "grid", path)
    if not grid_raw:
        raise IsaError(f"{path}: [grid] is empty; list at least one key, e.g. seed = [0, 1]")
    grid: dict[str, list[Any]] = {}
    for key, values in grid_raw.items():
        flag = _flag(key)
        if flag != "method" and flag not in TRAIN_FLAGS:
            raise IsaError(f"{path}: [grid] has {key!r}, which is not a flag of `isa train`")
        if not isinstance(values, list) or not values:
            raise IsaError(f"{path}: [grid] {key} must be a non-empty list")
        for value in values:
            if flag == "method":
                if not isinstance(value, str):
                    raise IsaError(
                        f"{path}: [grid] method lists {_describe(value)}; list method names"
                    )
            else:
                _check_value(f"{path}: [grid]", flag, value)
        if len({json.dumps(v) for v in values}) != len(values):
            raise IsaError(f"{path}: [grid] {key} lists a value twice")
        grid[flag] = values
    for method in grid.get("method", []):
        if method not in methods:
            raise IsaError(f"{path}: [grid] method {method!r} has no [methods.{method}] table")
    evaluation = _check_flags("eval", _table(raw, "eval", path), EVAL_FLAGS, path)
    spec = SweepSpec(name, base, methods, grid, evaluation)
    _check_count(spec.count(), f"{path}: [grid]")
    return spec


def run_folder(sweep_folder: Path, run_id: str) -> Path:
    """``SWEEP/runs/ID``, refused unless ID is a safe name and the folder lies inside SWEEP."""
    check_name("run id", run_id)
    folder = sweep_folder / "runs" / run_id
    if not folder.resolve().is_relative_to(sweep_folder.resolve()):
        raise IsaError(
            f"run folder {folder} resolves outside the sweep folder {sweep_folder} "
            "(a symbolic link?); remove the link or use another --out"
        )
    return folder


def filter_runs(runs: list[Run], only: list[str]) -> list[Run]:
    """The runs whose grid has every KEY=VALUE of ``only``; values compare as TOML values, so
    ``beta=1`` matches 1.0. A filter that matches no run is refused, listing the values."""
    for index, item in enumerate(only):
        key, sep, text = item.partition("=")
        key, text = _flag(key.strip()), text.strip()
        if not sep or not key:
            raise IsaError(f"--only {item!r}: write KEY=VALUE, e.g. method=isa-vae")
        keys = list(runs[0].grid) if runs else []
        if key not in keys:
            raise IsaError(
                f"--only {item!r}: {key} is not a key of the spec's [grid]; "
                f"use one of {', '.join(keys)}"
            )
        wanted = _filter_value(text)
        kept = [r for r in runs if _same_value(r.grid[key], wanted, text)]
        if not kept:
            values = []
            for run in runs:
                shown = _show_value(run.grid[key])
                if shown not in values:
                    values.append(shown)
            raise IsaError(
                f"--only {item!r} matches no run; {key} takes {', '.join(values)}"
                f"{' among the runs left' if index else ''}"
            )
        runs = kept
    return runs


def _filter_value(text: str) -> Any:
    """The value of ``KEY=TEXT`` read as TOML (1, 1.0, true, "x"); bare words stay text."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _same_value(value: Any, wanted: Any, text: str) -> bool:
    if isinstance(value, str):
        return value in (text, wanted)
    if isinstance(value, bool) or isinstance(wanted, bool):
        return isinstance(value, bool) and isinstance(wanted, bool) and value == wanted
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
        return value == wanted
    return False


def _show_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def check_data(runs: list[Run]) -> None:
    """Refuse runs whose ``data`` is neither a built-in data set nor an existing path, so a
    typo is caught before any run starts (paths are relative to the current folder)."""
    from isa_core.data import BUILT_IN

    seen = set()
    for run in runs:
        data = str(run.flags.get("data", "dsprites"))
        if data in seen or data in BUILT_IN:
            continue
        seen.add(data)
        if not Path(data).exists():
            raise IsaError(
                f"run {run.id}: data {data!r} is not a built-in data set "
                f"({', '.join(BUILT_IN)}) and no such file or folder exists here; fix the "
                "spec's data or run from the folder its relative paths start in"
            )


def load_manifest(folder: Path) -> list[dict[str, Any]]:
    """The runs listed in ``FOLDER/sweep.json`` (written by `isa sweep run`), checked."""
    path = folder / "sweep.json"
    if not path.exists():
        raise IsaError(f"{folder} is not a sweep folder (no sweep.json); run `isa sweep run` first")
    redo = "rerun `isa sweep run SPEC -o OUT` to rewrite it"
    try:
        manifest = json.loads(path.read_bytes())
    except IsADirectoryError:
        raise IsaError(f"{path} is a folder, not a sweep manifest; {redo}") from None
    except ValueError:  # not JSON, or not UTF-8
        raise IsaError(f"{path} is not JSON; {redo}") from None
    runs = manifest.get("runs") if isinstance(manifest, dict) else None
    if not isinstance(runs, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("method"), (str, type(None)))
        and isinstance(entry.get("grid"), dict)
        for entry in runs
    ):
        raise IsaError(
            f"{path} is not a sweep manifest (an object with 'runs': a list of objects with "
            f"'id', 'method' and 'grid'); {redo}"
        )
    for entry in runs:
        check_name(f"{path}: run id", entry.get("id"))
    return runs


def run_state(folder: Path) -> dict[str, Any]:
    """State of a run folder: pending, running (or interrupted), done or failed, with details."""
    state: dict[str, Any] = {"state": "pending", "step": 0}
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text(errors="replace").splitlines()
        if lines:
            try:
                last = json.loads(lines[-1])
            except ValueError:  # a line cut short by a kill
                last = None
            if isinstance(last, dict):
                step, loss = last.get("step"), last.get("loss")
                state["step"] = step if isinstance(step, int) and not isinstance(step, bool) else 0
                state["loss"] = loss if _is_number(loss) else None
        state["state"] = "running"
    if (folder / "error.txt").is_file():
        state["state"] = "failed"
        lines = (folder / "error.txt").read_text(errors="replace").strip().splitlines()
        state["error"] = lines[-1] if lines else ""
    if (folder / "result.json").exists():
        state["state"] = "done"
    return state


def _is_number(value: Any, limit: float = sys.float_info.max) -> bool:
    """An int or float (not a bool) of magnitude at most ``limit``: finite, and convertible to
    float (JSON integers may have hundreds of digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= limit  # False for NaN; compares exactly for huge ints


def _plausible(key: str, value: Any) -> str | None:
    """None when ``value`` is a plausible ``key`` of a results row, else what it must be."""
    if key == "mig":
        low, high = MIG_RANGE
        if _is_number(value) and low <= value <= high:
            return None
        return "it must be a number in 0..1 (MIG is a fraction)"
    if _is_number(value, MAX_MAGNITUDE):
        return None
    return f"it must be a finite number of magnitude at most {MAX_MAGNITUDE:g}"


def check_result_rows(
    rows: list[Any], source: str, require: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """``rows`` if each is an object whose ``mig``/``logpx``/``beta`` are finite numbers (or
    absent) and ``exponents`` a list of them; ``require`` names keys every row must have."""
    for number, row in enumerate(rows, 1):
        where = f"{source}: row {number}"
        if not isinstance(row, dict):
            raise IsaError(
                f"{where} is {_describe(row)}, not a JSON object; give the results of "
                "`isa sweep collect`"
            )
        where = f"{source}: run {row.get('id', number)}"
        for key in require:
            if row.get(key) is None:
                raise IsaError(f"{where} has no {key}")
        for key in ("mig", "logpx", "beta"):
            problem = None if row.get(key) is None else _plausible(key, row[key])
            if problem:
                raise IsaError(f"{where} has {key} {_short(row[key])}; {problem}")
        exponents = row.get("exponents")
        if exponents is not None and not (
            isinstance(exponents, list) and all(_is_number(e, MAX_MAGNITUDE) for e in exponents)
        ):
            raise IsaError(
                f"{where} has exponents {_short(exponents)}; it must be a list of finite numbers"
            )
        if not isinstance(row.get("config"), (dict, type(None))):
            raise IsaError(f"{where} has config {_short(row['config'])}; it must be an object")
    return rows


def select_representatives(
    rows: list[dict[str, Any]], by: list[str], quantile: float = 0.5, source: str = "results"
) -> list[dict[str, Any]]:
    """The paper's representative model per group (appendix A.5).

    Within each group (rows sharing the ``by`` values), keep the runs whose MIG is at least the
    group's ``quantile``-quantile of MIG (the upper part), take the mean and the variance of MIG
    and of logpx over those runs, and choose the kept run with the smallest Mahalanobis
    distance to that mean under the diagonal covariance (a variance of zero counts as one, so
    a group of identical or single runs picks its first run at distance 0). ``source`` names
    the rows' file in errors.
    """
    if not 0 <= quantile < 1:
        raise IsaError(f"--quantile must lie in [0, 1), got {quantile}")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        missing = [key for key in (*by, "mig", "logpx") if row.get(key) is None]
        if missing:
            raise IsaError(f"{source}: run {row.get('id', '?')} has no {', '.join(missing)}")
        check_result_rows([row], source)
        for key in by:
            if not isinstance(row[key], (str, int, float)):
                raise IsaError(
                    f"{source}: run {row.get('id', '?')} has {key} {_short(row[key])}; group by "
                    "keys with single values"
                )
        groups.setdefault(tuple(row[key] for key in by), []).append(row)
    chosen = []
    for key, members in groups.items():
        migs = sorted(r["mig"] for r in members)
        threshold = min(_quantile(migs, quantile), migs[-1])  # rounding keeps the best run
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


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity, which Slurm and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_run(jobs: int, cores: int | None = None) -> int:
    """Intra-op threads for each of ``jobs`` concurrent CPU runs: an equal share of the cores,
    at least one, so that runs never oversubscribe the machine (three 2-thread runs on 2 cores
    each ran about 10x slower than one alone)."""
    if jobs < 1:
        raise IsaError(f"--jobs must be >= 1, got {jobs}")
    return max(1, (cpu_cores() if cores is None else cores) // jobs)
