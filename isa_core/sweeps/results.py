"""The results of a sweep: one typed `RunResult` per finished run, read, checked and selected.

A finished run folder holds ``result.json`` (the run's `isa mig` record, with its `isa score`
record under ``scores`` when the spec's ``[eval]`` lists metrics), ``model.safetensors``
(its config) and ``metrics.jsonl`` (learned exponents, speed). `isa sweep collect` writes one
results row per run as a JSON line (`RunResult.as_row`); `isa select` and `isa plot` read them
back (`read_results`), refusing damaged rows in one line.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isa_core.errors import IsaError, field_error
from isa_core.sweeps.execute import CODES_FILE, RESULT_FILE

__all__ = [
    "MAX_MAGNITUDE",
    "MIG_RANGE",
    "RunResult",
    "check_result_rows",
    "read_results",
    "select_representatives",
]

# Plausible values in a results row: MIG is a fraction in 0..1 (estimates may stray a little),
# and no log-likelihood, beta or exponent comes near 1e12; bigger values are damage, and their
# squares must not overflow in `isa select`.
MIG_RANGE = (-1.0, 2.0)
MAX_MAGNITUDE = 1e12

# The keys of a results row besides the run's grid values (which sit between beta and config).
ROW_KEYS = (
    "id",
    "method",
    "beta",
    "config",
    "mig",
    "logpx",
    "gaps",
    "exponents",
    "seconds",
    "images_per_s",
    "model",
    "codes",
    "scores",  # only in rows of sweeps whose [eval] lists score metrics
)
# Keys of an `isa score` record that describe the scoring rather than score the codes.
SCORE_CONTEXT = ("seed", "n")
HINT = "give the results file (JSON lines) of `isa sweep collect`"


@dataclass(frozen=True)
class RunResult:
    """One finished run of a sweep: its grid point, config, scores and file paths.

    Fields a hand-written results row leaves out are None. ``beta`` is the run's β also when
    the spec fixes it in ``[base]`` rather than in the grid, so that β always groups the runs.
    """

    id: str | None
    method: str | None
    beta: float | None
    grid: dict[str, Any]
    config: dict[str, Any] | None
    mig: float | None
    logpx: float | None
    gaps: dict[str, float | None] | None
    exponents: list[float] | None
    seconds: float | None
    images_per_s: float | None
    model: str | None
    codes: str | None
    scores: dict[str, float] | None = None  # the numbers of `isa score` ([eval] metrics)

    @classmethod
    def from_run_folder(cls, entry: dict[str, Any], run_dir: Path) -> RunResult:
        """The result of the finished run ``entry`` (of ``sweep.json``) in ``run_dir``; a file
        isa did not write is refused in one line."""
        from isa_core import io  # numpy and torch, loaded only when a run is read
        from isa_core.checkpoint import METRICS_FILE, MODEL_FILE

        path = run_dir / RESULT_FILE
        redo = f"delete {path} and run the sweep again to redo the run"
        try:
            result = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            raise IsaError(f"{path} is not readable JSON; {redo}") from None
        factors = result.get("factors") if isinstance(result, dict) else None
        if (
            not isinstance(factors, list)
            or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in factors)
            or "mig" not in result
        ):
            raise IsaError(f"{path} is not a result of `isa sweep run`; {redo}")
        model = run_dir / MODEL_FILE
        config = io.load_bundle(model).metadata.get("config")
        if not isinstance(config, dict):
            raise IsaError(f"{model} has no run config; it was not written by isa train; {redo}")
        config = dict(config)
        if isinstance(config.get("steps"), int) and config["steps"] > 0:
            config["epochs"] = None  # a run given --steps (older files stored the default 20.0)
        last = _last_metrics(run_dir / METRICS_FILE)
        grid = dict(entry["grid"])
        return cls(
            id=entry["id"],
            method=grid.get("method", entry["method"]),
            beta=grid.get("beta", config.get("beta")),
            grid=grid,
            config=config,
            mig=result["mig"],
            logpx=result.get("logpx"),
            gaps={f["name"]: f.get("gap") for f in factors},
            exponents=last.get("exponents"),
            seconds=result.get("seconds"),
            images_per_s=last.get("images_per_s"),
            model=str(model.resolve()),
            codes=str((run_dir / CODES_FILE).resolve()),
            scores=_score_numbers(result.get("scores"), path, redo),
        )

    @classmethod
    def from_row(cls, row: Any, source: str = "results") -> RunResult:
        """The result a results row describes, checked as `check_result_rows` checks it; every
        key that is not a field of the row is a grid value."""
        check_result_rows([row], source)
        return cls._of_row(row)

    @classmethod
    def _of_row(cls, row: dict[str, Any]) -> RunResult:
        grid = {key: value for key, value in row.items() if key not in ROW_KEYS}
        return cls(grid=grid, **{key: row.get(key) for key in ROW_KEYS})

    def as_row(self) -> dict[str, Any]:
        """The results row (one JSON line of `isa sweep collect`): id, method, beta, the grid
        values, then config, scores and paths."""
        row = {
            "id": self.id,
            "method": self.method,
            # β groups the rows (select, plot), also when it is fixed in [base], not in the grid.
            "beta": self.beta,
            **self.grid,
            "config": self.config,
            "mig": self.mig,
            "logpx": self.logpx,
            "gaps": self.gaps,
            "exponents": self.exponents,
            "seconds": self.seconds,
            "images_per_s": self.images_per_s,
            "model": self.model,
            "codes": self.codes,
        }
        if self.scores is not None:
            row["scores"] = self.scores
        return row

    @property
    def learned_exponents(self) -> list[float] | None:
        """The exponents (p0, then one per subspace) of a run that learned them, else None."""
        if self.exponents and (self.config or {}).get("learn_exponents"):
            return self.exponents
        return None


def _score_numbers(record: Any, path: Path, redo: str) -> dict[str, float] | None:
    """The numbers of a run's `isa score` record (None when it has none): each score, without
    its matrices, its settings or the context in ``SCORE_CONTEXT``."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise IsaError(f"{path}: 'scores' is not an `isa score` record; {redo}")
    return {
        key: value
        for key, value in record.items()
        if key not in SCORE_CONTEXT and _is_number(value, MAX_MAGNITUDE)
    }


def _last_metrics(path: Path) -> dict[str, Any]:
    """The last readable line of a metrics.jsonl ({} when there is none)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            return record
    return {}


def read_results(path: Path, require: tuple[str, ...] = ()) -> list[RunResult]:
    """The runs of a results JSONL file (`isa sweep collect`), checked; ``require`` names the
    keys every row must have."""
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise IsaError(
            f"{path}: no such results file; write one with `isa sweep collect`"
        ) from None
    except IsADirectoryError:
        raise IsaError(f"{path} is a folder; {HINT}") from None
    except UnicodeDecodeError:
        raise IsaError(f"{path} is not text (binary data?); {HINT}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError):
            raise IsaError(f"{path}:{number} is not a JSON line; {HINT}") from None
    if not rows:
        raise IsaError(f"{path} holds no results; {HINT} from a sweep with finished runs")
    check_result_rows(rows, str(path), require)
    return [RunResult._of_row(row) for row in rows]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    """A JSON value as a message shows it: a list by its kind, true/false as JSON writes them."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return str(value).lower()
    return _short(value)


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
        scores = row.get("scores")
        if scores is not None and not (
            isinstance(scores, dict) and all(_is_number(v, MAX_MAGNITUDE) for v in scores.values())
        ):
            raise IsaError(
                f"{where} has scores {_short(scores)}; it must be an object of finite numbers"
            )
    return rows


def select_representatives(
    results: list[RunResult], by: list[str], quantile: float = 0.5, source: str = "results"
) -> list[dict[str, Any]]:
    """The paper's representative model per group (appendix A.5).

    Within each group (runs sharing the ``by`` values of their rows), keep the runs whose MIG
    is at least the group's ``quantile``-quantile of MIG (the upper part), take the mean and
    the variance of MIG and of logpx over those runs, and choose the kept run with the smallest
    Mahalanobis distance to that mean under the diagonal covariance (a variance of zero counts
    as one, so a group of identical or single runs picks its first run at distance 0).
    ``source`` names the results' file in errors.
    """
    if not 0 <= quantile < 1:
        raise field_error("quantile", f"must lie in [0, 1), got {quantile}")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for result in results:
        row = result.as_row()
        run = "?" if row["id"] is None else row["id"]
        missing = [key for key in (*by, "mig", "logpx") if row.get(key) is None]
        if missing:
            raise IsaError(f"{source}: run {run} has no {', '.join(missing)}")
        check_result_rows([row], source)
        for key in by:
            if not isinstance(row[key], (str, int, float)):
                raise IsaError(
                    f"{source}: run {run} has {key} {_short(row[key])}; group "
                    "by keys with single values"
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
                "id": kept[best]["id"],
                "distance": distances[best],
                "mig": kept[best]["mig"],
                "logpx": kept[best]["logpx"],
                "kept": len(kept),
                "runs": len(members),
                "mean_mig": means[0],
                "mean_logpx": means[1],
                "model": kept[best]["model"],
                "codes": kept[best]["codes"],
            }
        )
    return chosen


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
