"""Scoring protocols: the named presets of the choices that make one model's MIG differ between
libraries (factor set, means or posterior, MI estimator, points, normalisation).

* ``isa`` (the default): MIG of the posterior q(z|x) = N(mean, exp(logvar)) over every code and
  every factor, I(z_j; v_k) by deterministic quadrature of the aggregate posterior.
* ``chen2018`` (Chen et al. 2018, their released code): the posterior over every code, I by
  Monte Carlo with 10,000 draws (``MiEstimator.sampling``), dSprites' ``shape`` left out (their
  MIG scores scale, orientation, x and y).
* ``locatello2019`` (Locatello et al. 2019, disentanglement_lib): the posterior means of 10,000
  codes drawn with replacement, each latent discretised into 20 equal-width bins over those
  points, I the discrete mutual information (``MiEstimator.histogram``); every factor.

Every preset divides each factor's gap by H(v_k), the entropy of the factor's empirical
distribution over the scored codes (log |V_k| on a full uniform grid, which is Chen et al.'s
divisor). The other scores (DCI, SAP, modularity, explicitness) take the posterior means of
10,000 training and 5,000 test codes drawn with replacement under every preset, as Locatello et
al.'s study does, and use the preset's factor set; the FactorVAE and BetaVAE scores fix one
factor of the whole grid at a time, so they always use every factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from isa_core.choices import MiEstimator, Protocol, parse_choice

__all__ = ["PROTOCOLS", "ProtocolSettings", "protocol_settings"]

NORMALIZATION = (
    "H(v_k), the factor's empirical entropy over the scored codes (log |V_k| on a full grid)"
)


@dataclass(frozen=True)
class ProtocolSettings:
    """The exact settings of one protocol (see the module docstring for their sources)."""

    name: str
    left_out_factors: tuple[str, ...]  # factors left out of the scores where the codes have them
    representation: str  # MIG of "posterior" (mean and logvar) or of "means" only
    estimator: MiEstimator  # how I(z_j; v_k) is estimated
    mig_points: int | None  # codes drawn with replacement for MIG; None: every code once
    samples: int  # Monte-Carlo draws of the sampling estimator
    bins: int  # bins per latent of the histogram estimator
    normalization: str  # the divisor of each factor's gap
    num_train: int = 10_000  # training codes of DCI, SAP, modularity and explicitness
    num_test: int = 5_000  # test codes of the same

    @property
    def needs_logvar(self) -> bool:
        """Whether MIG under this protocol reads the posterior variances."""
        return self.representation == "posterior"

    def factors(self, names: Sequence[str]) -> list[str]:
        """The factors of ``names`` this protocol scores, in their order."""
        return [name for name in names if name not in self.left_out_factors]

    def as_dict(self) -> dict:
        """The settings as JSON values (what `isa score` prints with its scores)."""
        record = asdict(self)
        record["estimator"] = str(self.estimator)
        record["left_out_factors"] = list(self.left_out_factors)
        return record


PROTOCOLS = {
    Protocol.isa: ProtocolSettings(
        name="isa",
        left_out_factors=(),
        representation="posterior",
        estimator=MiEstimator.quadrature,
        mig_points=None,
        samples=10_000,
        bins=20,
        normalization=NORMALIZATION,
    ),
    Protocol.chen2018: ProtocolSettings(
        name="chen2018",
        left_out_factors=("shape",),
        representation="posterior",
        estimator=MiEstimator.sampling,
        mig_points=None,
        samples=10_000,
        bins=20,
        normalization=NORMALIZATION,
    ),
    Protocol.locatello2019: ProtocolSettings(
        name="locatello2019",
        left_out_factors=(),
        representation="means",
        estimator=MiEstimator.histogram,
        mig_points=10_000,
        samples=10_000,
        bins=20,
        normalization=NORMALIZATION,
    ),
}


def protocol_settings(protocol: Protocol | str) -> ProtocolSettings:
    """The settings of ``protocol`` (a name of ``Protocol``); an unknown name is refused."""
    return PROTOCOLS[parse_choice(Protocol, "protocol", protocol)]
