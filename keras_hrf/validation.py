"""Argument checks shared by the package's layers, models and metrics."""

import numpy as np


def check_positive_int(name, value, minimum=1):
    """Return `value` as an int, or raise a ValueError naming the argument
    and the value received. `bool` is refused although it is an int."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(
            f"Received an invalid value for `{name}`, expected {expected}. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_hrf_expansion(hrf_expansion):
    """`None` (no HRF) or a positive number (a multiple of the input width)."""
    if hrf_expansion is not None and (
        isinstance(hrf_expansion, bool)
        or not isinstance(hrf_expansion, (int, float, np.integer, np.floating))
        or hrf_expansion <= 0
    ):
        raise ValueError(
            "Received an invalid value for `hrf_expansion`, expected None or a "
            "positive number (a multiple of the input width). Received: "
            f"hrf_expansion={hrf_expansion!r}"
        )
    return hrf_expansion
