"""Sweep specs: a TOML file expanded into runs, each with its folder and its train config.

A spec has ``[sweep]`` (``name``, ``data``), ``[base]`` (train flags every run shares),
``[methods.NAME]`` (named flag sets), ``[grid]`` (lists whose Cartesian product gives the runs;
``method`` picks a method, any other key is a train flag) and an optional ``[eval]`` (the
arguments of ``isa_core.metrics.mig_report``, a ``protocol`` of ``isa_core.scores.protocol``,
and ``metrics``: the scores of `isa score` to store beside MIG, e.g. ``["dci", "sap"]``).
The train flags are the fields of ``TrainConfig`` and of ``PriorSpec`` (whose prior flags
build the config's tree) and ``device``; each takes the kind of value its field's type
says. Keys may use underscores or dashes (``batch_size`` or ``batch-size``). A run's id is a
stable slug of its grid values, e.g. ``isa-vae_beta2_seed7``; its folder is
``OUT/NAME/runs/ID/``.

Sweep names, method names and run ids become folder names, so they must be safe names
(``SAFE_NAME``, at most ``NAME_MAX`` characters); a run id longer than that keeps its first
characters and ends in a short hash of the whole id, so it stays unique and stable.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import inspect
import itertools
import json
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomllib

from isa_core.errors import IsaError, field_error
from isa_core.priors.spec import PriorSpec

if TYPE_CHECKING:
    from isa_core.config import TrainConfig

__all__ = [
    "MAX_RUNS",
    "NAME_MAX",
    "Run",
    "SweepSpec",
    "check_data",
    "check_name",
    "eval_flags",
    "filter_runs",
    "load_manifest",
    "load_spec",
    "run_folder",
    "train_config",
    "train_flags",
    "write_manifest",
]

SECTIONS = {"sweep", "base", "methods", "grid", "eval"}
# Old spec keys still read, and the field each now sets.
ALIASES = {"estimator": "tc_estimator"}  # deprecated: `isa train --estimator`
NOT_FLAGS = {"tree"}  # TrainConfig's resolved tree; specs give PriorSpec's tree instead
MANIFEST = "sweep.json"

NAME_MAX = 100
SAFE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")
NAME_RULE = f"use 1 to {NAME_MAX} letters, digits, '.', '_', '+' or '-', not starting with '.'"

# A grid bigger than this is a typo (8 keys of 40 values are 40**8 runs); it is refused before
# it is expanded, since expanding it alone would take hours.
MAX_RUNS = 100_000


def _kind(hint: Any) -> type:
    """The kind of TOML value a field of type ``hint`` takes: bool, int, float or str (text,
    which numbers may stand for, as on the command line)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = options[0] if len(options) == 1 else str
    return hint if hint in (bool, int, float) else str


@functools.cache
def train_flags() -> dict[str, type]:
    """Each flag a train section may set, with its kind: the fields of ``TrainConfig`` and of
    ``PriorSpec`` (the prior flags), and ``device``."""
    from isa_core.config import TrainConfig

    kinds = {}
    for cls in (TrainConfig, PriorSpec):
        hints = typing.get_type_hints(cls)
        kinds.update({f.name: _kind(hints[f.name]) for f in dataclasses.fields(cls)})
        if cls is TrainConfig:
            kinds = {name: kind for name, kind in kinds.items() if name not in NOT_FLAGS}
    kinds["device"] = str
    return kinds


@functools.cache
def eval_flags() -> dict[str, type]:
    """Each key of ``[eval]``, with its kind: the arguments of ``mig_report`` after the codes,
    the scoring ``protocol`` and the score ``metrics`` (a list of names)."""
    from isa_core import metrics

    # The codes' type is imported only for type checkers; it is not a flag, so any name will do.
    hints = typing.get_type_hints(metrics.mig_report, localns={"Codes": object})
    names = list(inspect.signature(metrics.mig_report).parameters)[1:]
    return {name: _kind(hints[name]) for name in names} | {"protocol": str, "metrics": list}


def _flag(name: str) -> str:
    return name.replace("-", "_")


def _field(key: str, where: str) -> str:
    """The field a train flag ``key`` sets; an old name still works, with a warning."""
    name = _flag(key)
    if name in ALIASES:
        warnings.warn(
            f"{where} {key} is the old name of {ALIASES[name]}; write {ALIASES[name]}",
            FutureWarning,
            stacklevel=3,
        )
    return ALIASES.get(name, name)


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


def _check_value(where: str, name: str, kind: type, value: Any) -> Any:
    """``value`` if a flag of ``kind`` can take it (a string, number or true/false)."""
    if kind is list:
        ok = isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
        wanted = "a list of names"
    elif kind is bool:
        ok, wanted = isinstance(value, bool), "true or false"
    elif isinstance(value, bool):
        ok, wanted = False, "a value, not true/false"
    elif kind is int:
        ok, wanted = isinstance(value, int), "an integer"
    elif kind is float:
        ok, wanted = isinstance(value, (int, float)), "a number"
    else:
        ok, wanted = isinstance(value, (str, int, float)), "a string or a number"
    if not ok:
        option = "--" + name.replace("_", "-")
        raise IsaError(f"{where} {name} is {_describe(value)}, but {option} takes {wanted}")
    return value


@dataclass(frozen=True)
class Run:
    """One run: its id, grid values, method and the full set of train flags."""

    id: str
    grid: dict[str, Any]
    method: str | None
    flags: dict[str, Any]

    def train_config(self) -> TrainConfig:
        """The run's ``TrainConfig`` (validated); see :func:`train_config`."""
        return train_config(self.flags)

    @property
    def device(self) -> str:
        """The device the run asks for (``auto`` unless its flags name one)."""
        return str(self.flags.get("device", "auto"))


def train_config(flags: dict[str, Any]) -> TrainConfig:
    """The ``TrainConfig`` that train flags describe, as `isa train` builds it: the prior flags
    make a ``PriorSpec`` resolved into the tree; ``steps`` replaces the default epochs."""
    from isa_core.config import TrainConfig

    kinds = train_flags()
    values = {
        name: value if kinds[name] in (bool, int) else kinds[name](value)
        for name, value in flags.items()
        if name != "device"
    }
    prior_fields = [f.name for f in dataclasses.fields(PriorSpec)]
    prior = PriorSpec(**{name: values.pop(name) for name in prior_fields if name in values})
    if "steps" in values:
        if "epochs" in values:
            raise IsaError("give steps or epochs, not both")
        if values["steps"] < 1:
            raise field_error("steps", f"must be >= 1, got {values['steps']}")
        values["epochs"] = None
    tree = prior.resolve(learn_exponents=values.get("learn_exponents", False))
    return TrainConfig(tree=tree, **values)


@dataclass
class SweepSpec:
    """A validated sweep spec: its name, shared flags, methods, grid and MIG settings."""

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
            flags.update({ALIASES.get(k, k): v for k, v in point.items() if k != "method"})
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


def _check_flags(section: str, flags: dict[str, Any], source: Path) -> dict[str, Any]:
    """A section's flags under their field names, each checked against its kind."""
    is_eval = section == "eval"
    kinds = eval_flags() if is_eval else train_flags()
    checked: dict[str, Any] = {}
    for key, value in flags.items():
        name = _flag(key) if is_eval else _field(key, f"{source}: [{section}]")
        if name not in kinds:
            raise IsaError(
                f"{source}: [{section}] has {key!r}, which is not a flag of "
                f"`isa {'mig` or `isa score' if is_eval else 'train'}`"
            )
        if name in checked:
            raise IsaError(f"{source}: [{section}] sets {name} twice; keep one {name}")
        checked[name] = _check_value(f"{source}: [{section}]", name, kinds[name], value)
    return checked


def _check_eval(evaluation: dict[str, Any], source: Path) -> dict[str, Any]:
    """``[eval]`` with its score names checked (stored as a list) and its MIG settings checked
    against its protocol, which may fix them."""
    from isa_core.scores import check_protocol_flags, parse_metrics

    checked = dict(evaluation)
    try:
        if "metrics" in checked:
            checked["metrics"] = [str(metric) for metric in parse_metrics(checked["metrics"])]
        if "protocol" in checked:
            given = {key: value for key, value in checked.items() if key in eval_flags()}
            for key in ("seed", "protocol", "metrics"):
                given.pop(key, None)
            check_protocol_flags(checked["protocol"], **given)
    except IsaError as error:
        raise IsaError(f"{source}: [eval] {error}") from None
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


def _check_grid(grid_raw: dict[str, Any], path: Path) -> dict[str, list[Any]]:
    """The grid's lists, each value checked against its flag's kind."""
    if not grid_raw:
        raise IsaError(f"{path}: [grid] is empty; list at least one key, e.g. seed = [0, 1]")
    kinds = train_flags()
    grid: dict[str, list[Any]] = {}
    for key, values in grid_raw.items():
        flag = _flag(key)
        name = flag if flag == "method" else _field(key, f"{path}: [grid]")
        if flag != "method" and name not in kinds:
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
                _check_value(f"{path}: [grid]", name, kinds[name], value)
        if len({json.dumps(v) for v in values}) != len(values):
            raise IsaError(f"{path}: [grid] {key} lists a value twice")
        grid[flag] = values  # keyed as written, so that run ids stay as they were
    return grid


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
    base = _check_flags("base", _table(raw, "base", path), path)
    if "data" in sweep:
        base.setdefault("data", sweep["data"])
    methods = {}
    for method, flags in _table(raw, "methods", path).items():
        check_name(f"{path}: method", method)
        if not isinstance(flags, dict):
            raise IsaError(f"{path}: [methods.{method}] must be a table of flags")
        methods[method] = _check_flags(f"methods.{method}", flags, path)
    grid = _check_grid(_table(raw, "grid", path), path)
    for method in grid.get("method", []):
        if method not in methods:
            raise IsaError(f"{path}: [grid] method {method!r} has no [methods.{method}] table")
    evaluation = _check_eval(_check_flags("eval", _table(raw, "eval", path), path), path)
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
            raise field_error("only", f"{item!r}: write KEY=VALUE, e.g. method=isa-vae")
        keys = list(runs[0].grid) if runs else []
        if key not in keys:
            raise field_error(
                "only",
                f"{item!r}: {key} is not a key of the spec's [grid]; use one of {', '.join(keys)}",
            )
        wanted = _filter_value(text)
        kept = [r for r in runs if _same_value(r.grid[key], wanted, text)]
        if not kept:
            values = []
            for run in runs:
                shown = _show_value(run.grid[key])
                if shown not in values:
                    values.append(shown)
            raise field_error(
                "only",
                f"{item!r} matches no run; {key} takes {', '.join(values)}"
                f"{' among the runs left' if index else ''}",
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


def write_manifest(folder: Path, spec: SweepSpec) -> None:
    """``FOLDER/sweep.json``: every run of the spec (id, method, grid, flags), for status and
    collect, written atomically."""
    from isa_core import io

    runs = [{"id": r.id, "method": r.method, "grid": r.grid, "flags": r.flags} for r in spec.runs()]
    with io.atomic_write(folder / MANIFEST) as handle:
        handle.write(json.dumps({"name": spec.name, "runs": runs}).encode())


def load_manifest(folder: Path) -> list[dict[str, Any]]:
    """The runs listed in ``FOLDER/sweep.json`` (written by `isa sweep run`), checked."""
    path = folder / MANIFEST
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
