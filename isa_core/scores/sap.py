"""SAP, the Separated Attribute Predictability score (Kumar et al. 2018, section 3).

S[i, j] is how well latent i alone predicts factor j; for discrete factors (Locatello et al.
2019's setting) it is the test accuracy of a linear SVM trained on that one latent. SAP is the
mean over factors of the gap between the two most predictive latents:

    SAP = (1/F) sum_j (S[a_j, j] - S[b_j, j]),   a_j, b_j the latents with the largest and
                                                  second-largest S[., j]
"""

from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC

from isa_core.errors import field_error
from isa_core.scores.points import check_points

__all__ = ["sap", "sap_matrix"]


def sap_matrix(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
) -> np.ndarray:
    """The K x F matrix S: test accuracy of ``LinearSVC(C=0.01, class_weight="balanced")``.

    One classifier per (latent, factor) pair, fit on the raw training values of that latent;
    other settings are sklearn's defaults (squared hinge, one-vs-rest, max_iter 1000), with
    ``random_state=0`` so the solver is deterministic.
    """
    num_latents, num_factors = train_codes.shape[1], train_factors.shape[1]
    scores = np.zeros((num_latents, num_factors))
    for i in range(num_latents):
        for j in range(num_factors):
            classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=0)
            classifier.fit(train_codes[:, i : i + 1], train_factors[:, j])
            predicted = classifier.predict(test_codes[:, i : i + 1])
            scores[i, j] = np.mean(predicted == test_factors[:, j])
    return scores


def sap(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
) -> dict:
    """SAP (Kumar et al. 2018) with Locatello et al. 2019's settings; needs at least 2 latents.

    Returns the score and the K x F matrix S (as a list) it was taken from.
    """
    train_codes, train_factors, test_codes, test_factors = check_points(
        train_codes, train_factors, test_codes, test_factors
    )
    if train_codes.shape[1] < 2:
        raise field_error("train_codes", "must have at least 2 latents for SAP's top-two gap")
    scores = sap_matrix(train_codes, train_factors, test_codes, test_factors)
    top_two = np.sort(scores, axis=0)[-2:, :]
    return {"sap": float(np.mean(top_two[1] - top_two[0])), "sap_matrix": scores.tolist()}
