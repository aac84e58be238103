"""Disentanglement scores of a model's codes under a named protocol (``protocol.py``).

``score_codes`` draws the points each score needs with one seed, calls the array-level metrics
(DCI: ``dci.py``; SAP: ``sap.py``; modularity and explicitness: ``modularity.py``; FactorVAE
and BetaVAE: ``classifier.py`` over the factor grid of ``grid.py``) and MIG through
``isa_core.metrics``, and returns one JSON-able record. ``protocol_mig`` is MIG alone, as
`isa mig` prints it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from isa_core.choices import MiEstimator, Protocol, ScoreMetric, SubspaceGrouping, parse_choice
from isa_core.errors import IsaError, field_error
from isa_core.scores.protocol import ProtocolSettings, protocol_settings

if TYPE_CHECKING:
    from isa_core.codes import Codes

__all__ = [
    "GRID_SETTINGS",
    "SCORE_METRICS",
    "check_protocol_flags",
    "parse_metrics",
    "protocol_mig",
    "score_codes",
]

SCORE_METRICS = tuple(ScoreMetric)

# The FactorVAE and BetaVAE scores' sample sizes (Locatello et al. 2019), under every protocol.
GRID_SETTINGS = {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000}
VARIANCE_POINTS = 10_000  # codes that estimate the FactorVAE score's global variances


def parse_metrics(metrics: str | Iterable[str]) -> list[ScoreMetric]:
    """The scores named by ``metrics`` (names, or one comma-separated string), each once, in
    the order given; an unknown or empty list is refused."""
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    chosen: list[ScoreMetric] = []
    for name in names:
        if not isinstance(name, str):
            raise field_error("metrics", f"lists {name!r}; list score names")
        if name.strip():
            metric = parse_choice(ScoreMetric, "metrics", name.strip())
            if metric not in chosen:
                chosen.append(metric)
    if not chosen:
        raise field_error("metrics", f"names no score; use {', '.join(SCORE_METRICS)}")
    return chosen


def check_protocol_flags(protocol: Protocol | str, **given: Any) -> ProtocolSettings:
    """The settings of ``protocol``; a MIG setting in ``given`` (not None) that the protocol
    fixes is refused, since a preset means exactly its settings."""
    settings = protocol_settings(protocol)
    if settings.name == Protocol.isa:
        return settings
    for name, value in given.items():
        if value is None or (name == "group" and value == SubspaceGrouping.none):
            continue
        if isinstance(value, StrEnum):
            value = str(value)
        raise field_error(
            name,
            f"{value!r} cannot be combined with protocol {settings.name}, which fixes the MIG "
            "settings; leave it out, or use protocol isa",
        )
    return settings


def _rows(codes: Codes, rows: np.ndarray) -> Codes:
    """The codes of the rows ``rows`` (repeats allowed), metadata kept."""
    return replace(
        codes,
        mean=codes.mean[rows],
        logvar=None if codes.logvar is None else codes.logvar[rows],
        factors=codes.factors[rows],
        logpx=None if codes.logpx is None else codes.logpx[rows],
    )


def protocol_mig(
    codes: Codes,
    protocol: Protocol | str = Protocol.isa,
    seed: int = 0,
    estimator: MiEstimator | str | None = None,
    factors: Sequence[str] | str | None = None,
    samples: int | None = None,
    bins: int | None = None,
    group: SubspaceGrouping | str = SubspaceGrouping.none,
) -> dict:
    """MIG of ``codes`` under ``protocol``, as the record `isa mig` prints with the protocol
    named. Under ``isa`` the other arguments choose as `isa mig`'s flags do (None: default);
    the other protocols fix them (see ``protocol.py``)."""
    from isa_core.metrics import mig_report

    settings = check_protocol_flags(
        protocol, estimator=estimator, factors=factors, samples=samples, bins=bins, group=group
    )
    if not len(codes.mean):
        raise IsaError("the codes are of 0 images; MIG of no images is undefined")
    estimator = parse_choice(MiEstimator, "estimator", estimator or settings.estimator)
    if settings.name != Protocol.isa:
        factors = settings.factors(codes.factor_names)
        if not factors:
            raise IsaError(f"protocol {settings.name} leaves out every factor of these codes")
    if settings.mig_points is not None:
        rng = np.random.default_rng([seed, 1])  # a stream of its own: MIG's points
        codes = _rows(codes, rng.integers(0, len(codes.mean), settings.mig_points))
    if parse_choice(SubspaceGrouping, "group", group) != SubspaceGrouping.none:
        codes.require_logvar("the subspace MIG (Monte Carlo over the posterior)")
    if estimator != MiEstimator.histogram:
        codes.require_logvar(f"MIG with the {estimator} estimator")
    report = mig_report(
        codes,
        estimator=estimator,
        factors=factors,
        samples=settings.samples if samples is None else samples,
        bins=settings.bins if bins is None else bins,
        seed=seed,
        group=group,
    )
    return {**report, "protocol": settings.name}


def _train_test(codes: Codes, keep: list[int], settings: ProtocolSettings, seed: int):
    """Posterior means and factor columns ``keep`` of the training and test codes, drawn with
    replacement (Locatello et al. 2019 draw their points the same way)."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, len(codes.mean), settings.num_train)
    test = rng.integers(0, len(codes.mean), settings.num_test)
    factors = codes.factors[:, keep]
    return codes.mean[train], factors[train], codes.mean[test], factors[test]


def _grid(codes: Codes):
    """The factor grid of the codes (every factor); a partial grid is refused in one line."""
    from isa_core.scores.grid import FactorGrid

    try:
        return FactorGrid.from_codes(codes.mean, codes.factors, codes.factor_sizes)
    except IsaError as error:
        raise IsaError(str(error)) from None  # about the codes, not an argument of the caller


def _score(
    metric: ScoreMetric,
    codes: Codes,
    keep: list[int],
    settings: ProtocolSettings,
    seed: int,
    cache: dict[str, Any],
) -> dict:
    """One score's keys; ``cache`` holds what several scores share (points, grid, modularity)."""
    if metric == ScoreMetric.mig:
        report = protocol_mig(codes, settings.name, seed)
        return {"mig": report["mig"], "mig_gaps": {f["name"]: f["gap"] for f in report["factors"]}}
    if metric in (ScoreMetric.factorvae, ScoreMetric.betavae):
        from isa_core.scores.classifier import betavae_score, factorvae_score

        if "grid" not in cache:
            cache["grid"] = _grid(codes)
        if metric == ScoreMetric.factorvae:
            return factorvae_score(
                cache["grid"], seed, **GRID_SETTINGS, num_variance_estimate=VARIANCE_POINTS
            )
        return betavae_score(cache["grid"], seed, **GRID_SETTINGS)
    if "points" not in cache:
        cache["points"] = _train_test(codes, keep, settings, seed)
    points = cache["points"]
    if metric == ScoreMetric.dci:
        from isa_core.devices import cpu_cores
        from isa_core.scores.dci import dci

        # One factor's trees per core at a time: the same numbers, sooner (dci's tests check).
        return dci(*points, seed, n_jobs=cpu_cores())
    if metric == ScoreMetric.sap:
        from isa_core.scores.sap import sap

        return sap(*points)
    from isa_core.scores.modularity import modularity_explicitness

    if "modularity" not in cache:
        cache["modularity"] = modularity_explicitness(*points)
    result = cache["modularity"]
    if metric == ScoreMetric.modularity:
        return {"modularity": result["modularity"]}
    return {key: value for key, value in result.items() if key.startswith("explicitness")}


def score_codes(
    codes: Codes,
    metrics: str | Iterable[str],
    seed: int = 0,
    protocol: Protocol | str = Protocol.isa,
) -> dict:
    """The scores ``metrics`` of ``codes`` under ``protocol``, with the settings used: one
    JSON-able record. Deterministic in ``seed``: each score's points come from a stream of
    their own, so a score does not change with the others requested."""
    chosen = parse_metrics(metrics)
    settings = protocol_settings(protocol)
    if not len(codes.mean):
        raise IsaError("the codes are of 0 images; there is nothing to score")
    names = codes.factor_names
    kept = settings.factors(names)
    if not kept:
        raise IsaError(f"protocol {settings.name} leaves out every factor of these codes")
    keep = [names.index(name) for name in kept]
    record: dict[str, Any] = {
        "protocol": settings.name,
        "seed": seed,
        "n": len(codes.mean),
        "metrics": [str(metric) for metric in chosen],
        "scored_factors": kept,
        "settings": {
            **settings.as_dict(),
            "grid_scores": {**GRID_SETTINGS, "num_variance_estimate": VARIANCE_POINTS},
        },
    }
    cache: dict[str, Any] = {}
    for metric in chosen:
        try:
            record.update(_score(metric, codes, keep, settings, seed, cache))
        except IsaError as error:
            raise IsaError(f"{metric}: {error}") from None
    return record
