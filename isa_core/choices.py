"""Every choice set a flag or a config field offers, defined once (torch-free, so the CLI's
typer options use them without loading torch)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from isa_core.errors import field_error

__all__ = [
    "Arch",
    "Backend",
    "DType",
    "ExecutorKind",
    "FaExperiment",
    "MiEstimator",
    "Objective",
    "Precision",
    "PriorKind",
    "Protocol",
    "SampleMethod",
    "ScoreMetric",
    "SubspaceGrouping",
    "TcEstimator",
    "TrainLog",
    "TraversalSpan",
    "TraverseKind",
    "parse_choice",
]

Choice = TypeVar("Choice", bound=StrEnum)


def parse_choice(kind: type[Choice], field: str, value: Any) -> Choice:
    """``value`` as a member of ``kind``; otherwise an error naming ``field`` and the choices."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(kind)
        raise field_error(field, f"{value!r} is unknown; use {choices}") from None


class Objective(StrEnum):
    """The training objective (``isa_core.objectives.OBJECTIVES`` maps each to its loss)."""

    vae = "vae"  # β-VAE, ISA-VAE: ELBO with β on the KL (Eq. 4)
    tcvae = "tcvae"  # β-TCVAE, ISA-TCVAE: β on the total correlation (Eq. 5)
    factorvae = "factorvae"  # FactorVAE: γ on a discriminator's TC estimate


class TcEstimator(StrEnum):
    """Minibatch estimator of q(z) in the TC term (Chen et al. 2018, appendix C)."""

    mss = "mss"  # minibatch stratified sampling
    mws = "mws"  # minibatch weighted sampling


class MiEstimator(StrEnum):
    """How I(z_j; v_k) of MIG is estimated from the codes."""

    quadrature = "quadrature"  # deterministic Gauss-Hermite over the Gaussian mixture
    sampling = "sampling"  # Monte Carlo, Chen et al.'s scheme
    histogram = "histogram"  # discretised posterior means (Locatello et al.)


class Protocol(StrEnum):
    """A named set of scoring choices (``isa_core.scores.protocol`` holds each one's settings)."""

    isa = "isa"  # this project's default: quadrature MI of the posterior, every code and factor
    chen2018 = "chen2018"  # Chen et al. 2018: sampled MI of the posterior, dSprites without shape
    locatello2019 = "locatello2019"  # Locatello et al. 2019: histogram of means, 10,000 points


class ScoreMetric(StrEnum):
    """A disentanglement score of `isa score` (``isa_core.scores``)."""

    dci = "dci"  # Eastwood & Williams 2018
    sap = "sap"  # Kumar et al. 2018
    modularity = "modularity"  # Ridgeway & Mozer 2018
    explicitness = "explicitness"  # Ridgeway & Mozer 2018
    factorvae = "factorvae"  # Kim & Mnih 2018
    betavae = "betavae"  # Higgins et al. 2017
    mig = "mig"  # Chen et al. 2018


class Arch(StrEnum):
    """Encoder/decoder architecture."""

    mlp = "mlp"  # the paper's MLP (1200-1200)
    conv = "conv"  # Chen et al.'s convolutional networks


class Precision(StrEnum):
    """Numeric precision of the encoder and decoder (``isa_core.precision``)."""

    fp32 = "fp32"
    bf16 = "bf16"
    auto = "auto"  # bf16 where the device multiplies bf16 in hardware, else fp32


class Backend(StrEnum):
    """Kernels for a step's elementwise work (``isa_core.compiled``)."""

    auto = "auto"  # compiled on the CPU where it pays, eager elsewhere
    fused = "fused"  # always compiled; a compile failure is raised
    eager = "eager"  # never compiled


class PriorKind(StrEnum):
    """The prior family named by ``--prior`` (``isa_core.priors.spec.PriorSpec``)."""

    isa = "isa"  # independent subspaces: the L^p-nested ISA tree (Eq. 9)
    normal = "normal"  # N(0, I)
    gennorm = "gennorm"  # independent generalised normals with exponent p0


class SubspaceGrouping(StrEnum):
    """Whether MIG also scores each ISA subspace as one variable."""

    none = "none"
    subspaces = "subspaces"


class TraverseKind(StrEnum):
    """The figure `isa traverse` draws."""

    traversal = "traversal"
    latent_vs_true = "latent-vs-true"
    reconstructions = "reconstructions"
    samples = "samples"


class TraversalSpan(StrEnum):
    """Where a traversal's column values come from: the prior's marginal quantiles of z_j, or
    the code ± a number of aggregate-posterior standard deviations (``isa_core.traverse``)."""

    prior = "prior"
    posterior = "posterior"


class FaExperiment(StrEnum):
    """The factor-analysis experiments: rotating an ML solution by θ in [0, π] (B.3, B.5), or
    moving weight α in [0, 1/2] onto z1 of the over-complete model (B.4, Eq. 17)."""

    rotation = "rotation"
    prune = "prune"


class ExecutorKind(StrEnum):
    """Where a sweep's runs execute (``isa_core.sweeps.executors``)."""

    local = "local"  # worker processes on this machine
    slurm = "slurm"  # a Slurm job array through submitit
    submitit_local = "submitit-local"  # submitit's path on this machine, to test a sweep


class DType(StrEnum):
    """Floating-point type of written arrays."""

    float32 = "float32"
    float64 = "float64"


class SampleMethod(StrEnum):
    """Sampler of the prior: the general nested one (Alg. 1) or the ISA shortcut."""

    nested = "nested"
    isa = "isa"


class TrainLog(StrEnum):
    """Where `isa train` mirrors its metrics besides metrics.jsonl (the record)."""

    metrics = "metrics"
    tensorboard = "tensorboard"
