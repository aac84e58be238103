"""The two classifier scores: FactorVAE (Kim & Mnih 2018) and BetaVAE (Higgins et al. 2017).

Both draw batches "fix factor k, draw the others" from the whole factor grid and ask how well a
classifier recovers k from the codes. Defaults follow Locatello et al. 2019's study
(disentanglement_lib, unsupervised_study_v1): batch 64, 10,000 training and 5,000 evaluation
points, 10,000 points for the FactorVAE score's global variances, latents pruned below std 0.05.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from isa_core.errors import field_error
from isa_core.scores.grid import FactorGrid

__all__ = ["betavae_score", "factorvae_score"]

# Training points drawn at once: bounds the (points, batch, K) arrays to a few MB.
_CHUNK = 512


def factorvae_score(
    grid: FactorGrid,
    seed: int,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
) -> dict:
    """FactorVAE score (Kim & Mnih 2018): majority vote on argmin_j Var(z_j|v_k)/Var(z_j).

    Each point fixes a random factor k at a random value, draws ``batch_size`` codes, divides
    their per-latent variances by the global ones (estimated from ``num_variance_estimate``
    codes) and votes (argmin latent, k); latent j is classified as the factor with most training
    votes. Latents with global std below ``prune_threshold`` (Locatello's 0.05) are left out.
    Unlike disentanglement_lib, votes go to the latent's own index and the active count is the
    number kept (disentanglement_lib votes by position among the kept latents, reports K).
    """
    _check_grid(grid)
    _check_count("batch_size", batch_size, 2)
    _check_count("num_train", num_train, 1)
    _check_count("num_eval", num_eval, 1)
    _check_count("num_variance_estimate", num_variance_estimate, 2)
    if not isinstance(prune_threshold, int | float) or not 0 <= prune_threshold < np.inf:
        raise field_error("prune_threshold", f"must be a finite number >= 0, got {prune_threshold}")
    rng = _rng(seed)
    sample = grid.codes_of(grid.sample_factors(num_variance_estimate, rng))
    global_variance = sample.var(axis=0, ddof=1, dtype=np.float64)  # (K,)
    active = np.flatnonzero(np.sqrt(global_variance) >= prune_threshold)
    active = active[global_variance[active] > 0]  # an exactly constant latent has no ratio
    if active.size == 0:
        return {"factorvae_train": 0.0, "factorvae_eval": 0.0, "factorvae_active_latents": 0}
    train_votes = _factorvae_votes(grid, rng, batch_size, num_train, global_variance, active)
    eval_votes = _factorvae_votes(grid, rng, batch_size, num_eval, global_variance, active)
    classifier = train_votes.argmax(axis=0)  # (K,) the factor each latent stands for
    latents = np.arange(grid.num_latents)
    return {
        "factorvae_train": float(train_votes[classifier, latents].sum() / train_votes.sum()),
        "factorvae_eval": float(eval_votes[classifier, latents].sum() / eval_votes.sum()),
        "factorvae_active_latents": int(active.size),
    }


def betavae_score(
    grid: FactorGrid,
    seed: int,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
) -> dict:
    """BetaVAE score (Higgins et al. 2017): a linear classifier of k from mean |z1 - z2|.

    Each point picks a factor k and draws ``batch_size`` pairs of codes whose factor k agrees
    (each pair its own value); its feature is the mean absolute difference over the pairs (K,).
    The classifier is Locatello's: scikit-learn's LogisticRegression as its defaults stood in
    their study (L2, C = 1, liblinear, one-vs-rest), random_state = seed; accuracies on the
    training and evaluation points.
    """
    _check_grid(grid)
    if grid.num_factors < 2:
        raise field_error("grid", "has one factor: the BetaVAE score classifies among >= 2 factors")
    _check_count("batch_size", batch_size, 1)
    _check_count("num_train", num_train, 1)
    _check_count("num_eval", num_eval, 1)
    rng = _rng(seed)
    train_features, train_labels = _betavae_points(grid, rng, batch_size, num_train)
    if np.unique(train_labels).size < 2:
        raise field_error("num_train", f"is {num_train}: too few points to draw two factors")
    eval_features, eval_labels = _betavae_points(grid, rng, batch_size, num_eval)
    model = OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=seed))
    model.fit(train_features, train_labels)
    return {
        "betavae_train": float(model.score(train_features, train_labels)),
        "betavae_eval": float(model.score(eval_features, eval_labels)),
    }


def _factorvae_votes(
    grid: FactorGrid,
    rng: np.random.Generator,
    batch_size: int,
    num_points: int,
    global_variance: np.ndarray,
    active: np.ndarray,
) -> np.ndarray:
    """Votes (F, K): how often fixing factor k left latent j with the least normalised variance."""
    votes = np.zeros(grid.num_factors * grid.num_latents, dtype=np.int64)
    for start in range(0, num_points, _CHUNK):
        m = min(_CHUNK, num_points - start)
        fixed = rng.integers(0, grid.num_factors, size=m)  # (m,) k of each point
        factors = grid.sample_factors(m * batch_size, rng).reshape(m, batch_size, -1)
        points = np.arange(m)
        factors[points, :, fixed] = factors[points, 0, fixed][:, None]
        codes = grid.codes_of(factors.reshape(m * batch_size, -1)).reshape(m, batch_size, -1)
        local_variance = codes[:, :, active].var(axis=1, ddof=1, dtype=np.float64)  # (m, A)
        winner = active[np.argmin(local_variance / global_variance[active], axis=1)]  # (m,)
        votes += np.bincount(fixed * grid.num_latents + winner, minlength=votes.size)
    return votes.reshape(grid.num_factors, grid.num_latents)


def _betavae_points(
    grid: FactorGrid, rng: np.random.Generator, batch_size: int, num_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features (points, K): mean |z1 - z2| over pairs sharing factor k; labels k (points,)."""
    features = np.empty((num_points, grid.num_latents), dtype=np.float64)
    labels = np.empty(num_points, dtype=np.int64)
    for start in range(0, num_points, _CHUNK):
        m = min(_CHUNK, num_points - start)
        fixed = rng.integers(0, grid.num_factors, size=m)  # (m,)
        first = grid.sample_factors(m * batch_size, rng).reshape(m, batch_size, -1)
        second = grid.sample_factors(m * batch_size, rng).reshape(m, batch_size, -1)
        points = np.arange(m)
        second[points, :, fixed] = first[points, :, fixed]
        codes_first = grid.codes_of(first.reshape(m * batch_size, -1))
        codes_second = grid.codes_of(second.reshape(m * batch_size, -1))
        difference = np.abs(codes_first.astype(np.float64) - codes_second)  # (m * batch, K)
        features[start : start + m] = difference.reshape(m, batch_size, -1).mean(axis=1)
        labels[start : start + m] = fixed
    return features, labels


def _check_grid(grid: FactorGrid) -> None:
    """The scores read a FactorGrid (built by FactorGrid.from_codes), nothing else."""
    if not isinstance(grid, FactorGrid):
        raise field_error(
            "grid", f"must be a FactorGrid (FactorGrid.from_codes), got {type(grid).__name__}"
        )


def _check_count(field: str, value: int, minimum: int) -> None:
    """An integer count of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise field_error(field, f"must be an integer >= {minimum}, got {value!r}")


def _rng(seed: int) -> np.random.Generator:
    """The one random stream of a score, from a non-negative integer seed."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise field_error("seed", f"must be a non-negative integer, got {seed!r}")
    return np.random.default_rng(int(seed))
