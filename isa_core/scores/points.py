"""The train/test points the information-based scores (DCI, SAP, modularity, explicitness)
take: posterior means (N, K) and factor classes (N, F), checked once for all of them."""

from __future__ import annotations

import numpy as np

from isa_core.errors import field_error

__all__ = ["check_points"]


def check_points(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate a train/test split of codes (N, K) and integer factors (N, F); float64 / int64."""
    arrays = {
        "train_codes": train_codes,
        "train_factors": train_factors,
        "test_codes": test_codes,
        "test_factors": test_factors,
    }
    checked = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            shape = "(N, K)" if name.endswith("codes") else "(N, F)"
            raise field_error(name, f"must be a non-empty 2-D array {shape}, got {array.shape}")
        if name.endswith("codes"):
            if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
                raise field_error(name, "must hold finite numbers")
            checked[name] = array.astype(np.float64)
        else:
            if not np.issubdtype(array.dtype, np.number) or np.any(array != np.round(array)):
                raise field_error(name, "must hold integer factor values")
            checked[name] = array.astype(np.int64)
    for split in ("train", "test"):
        codes, factors = checked[f"{split}_codes"], checked[f"{split}_factors"]
        if codes.shape[0] != factors.shape[0]:
            raise field_error(
                f"{split}_factors",
                f"must have one row per code: {factors.shape[0]} rows for {codes.shape[0]} codes",
            )
    if checked["test_codes"].shape[1] != checked["train_codes"].shape[1]:
        raise field_error("test_codes", "must have as many latents as train_codes")
    if checked["test_factors"].shape[1] != checked["train_factors"].shape[1]:
        raise field_error("test_factors", "must have as many factors as train_factors")
    for j, column in enumerate(checked["train_factors"].T):
        if np.unique(column).size < 2:
            raise field_error(
                "train_factors", f"column {j} takes one value; a classifier needs two"
            )
    return (
        checked["train_codes"],
        checked["train_factors"],
        checked["test_codes"],
        checked["test_factors"],
    )
