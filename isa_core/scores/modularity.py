"""Modularity and explicitness (Ridgeway & Mozer 2018), as Locatello et al. 2019 compute them.

Modularity: each latent i is discretised into ``bins`` equal-width bins over its training range,
m[i, j] = I(z_i; v_j) in nats (discrete mutual information on the training points), and with
theta_i = max_j m[i, j],

    delta_i = sum_{j != argmax} m[i, j]^2 / (theta_i^2 (F - 1)),
    modularity = mean_i (1 - delta_i),

a latent with no information about any factor (theta_i = 0, e.g. a constant one) counting as 0.

Explicitness: per factor, a one-vs-rest L2 logistic regression (C = 1, liblinear: sklearn's
default when Locatello et al. ran the study) predicts the factor from the whole code,
standardised with the training mean and deviation; the factor's score is the ROC AUC of each
value's predicted probability, averaged over values (macro); explicitness is the mean over
factors, on the training and on the test points.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier

from isa_core.errors import field_error
from isa_core.scores.points import check_points

__all__ = ["discretize", "explicitness", "modularity", "modularity_explicitness"]


def discretize(codes: np.ndarray, bins: int) -> np.ndarray:
    """Each column of ``codes`` (N, K) as bin indices 1..bins of equal width over its range."""
    binned = np.zeros(codes.shape, dtype=np.int64)
    for i, column in enumerate(codes.T):
        edges = np.histogram_bin_edges(column, bins)
        binned[:, i] = np.digitize(column, edges[:-1])
    return binned


def modularity(mutual_information: np.ndarray) -> float:
    """Ridgeway & Mozer's modularity from a K x F mutual information matrix (see above)."""
    squared = np.asarray(mutual_information, dtype=np.float64) ** 2
    largest = squared.max(axis=1)
    rest = squared.sum(axis=1) - largest
    num_factors = squared.shape[1]
    if num_factors == 1:
        return float(np.mean(largest > 0))
    safe = np.where(largest > 0, largest, 1.0)
    per_latent = np.where(largest > 0, 1.0 - rest / (safe * (num_factors - 1)), 0.0)
    return float(np.mean(per_latent))


def _macro_auc(labels: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest ROC AUC; classes absent from ``labels`` are skipped."""
    aucs = []
    for c, value in enumerate(classes):
        positive = labels == value
        if positive.any() and not positive.all():
            aucs.append(roc_auc_score(positive, probabilities[:, c]))
    return float(np.mean(aucs)) if aucs else 0.5


def explicitness(
    train_codes: np.ndarray,
    train_factor: np.ndarray,
    test_codes: np.ndarray,
    test_factor: np.ndarray,
) -> tuple[float, float]:
    """Train and test macro ROC AUC of the one-vs-rest logistic regression for one factor."""
    classifier = OneVsRestClassifier(LogisticRegression(C=1.0, solver="liblinear", random_state=0))
    classifier.fit(train_codes, train_factor)
    classes = classifier.classes_
    train_auc = _macro_auc(train_factor, classifier.predict_proba(train_codes), classes)
    test_auc = _macro_auc(test_factor, classifier.predict_proba(test_codes), classes)
    return train_auc, test_auc


def modularity_explicitness(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    bins: int = 20,
) -> dict:
    """Modularity (on the training points, ``bins`` = 20 as in the study) and explicitness."""
    train_codes, train_factors, test_codes, test_factors = check_points(
        train_codes, train_factors, test_codes, test_factors
    )
    if bins < 2:
        raise field_error("bins", f"must be >= 2, got {bins}")
    binned = discretize(train_codes, bins)
    information = np.array(
        [[mutual_info_score(factor, latent) for factor in train_factors.T] for latent in binned.T]
    )
    mean = train_codes.mean(axis=0)
    deviation = train_codes.std(axis=0)
    deviation = np.where(deviation > 0, deviation, 1.0)
    train_standard = (train_codes - mean) / deviation
    test_standard = (test_codes - mean) / deviation
    scores = np.array(
        [
            explicitness(train_standard, train_factors[:, j], test_standard, test_factors[:, j])
            for j in range(train_factors.shape[1])
        ]
    )
    return {
        "modularity": modularity(information),
        "explicitness_train": float(scores[:, 0].mean()),
        "explicitness_test": float(scores[:, 1].mean()),
    }
