"""Sigma → pressure for one column per grid point, as the Held–Suarez output does it inside ``jax.jit``.

Functions take the array module (``jax.numpy``) as their first argument so that this module imports no JAX.
Vertical axes come first: (K, X, Y) on sigma centres, (P, X, Y) on target pressures.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def interp_in_log_sigma(jnp: Any, field: Any, log_sigma: np.ndarray, target: Any) -> Any:
    """Linear interpolation along the first axis, in ln σ, with linear extrapolation past either end.

    Args:
        field: (K, X, Y) values at the sigma-level centres.
        log_sigma: (K,) ascending ln σ of the centres.
        target: (P, X, Y) ln σ wanted in each column, ln(p / pₛ).

    Returns:
        (P, X, Y) interpolated values.
    """
    upper = jnp.clip(jnp.searchsorted(log_sigma, target), 1, log_sigma.size - 1)
    x0, x1 = jnp.asarray(log_sigma)[upper - 1], jnp.asarray(log_sigma)[upper]
    f0 = jnp.take_along_axis(field, upper - 1, axis=0)
    f1 = jnp.take_along_axis(field, upper, axis=0)
    return f0 + (target - x0) / (x1 - x0) * (f1 - f0)


def hydrostatic_geopotential(
    jnp: Any, geopotential: Any, temperature: Any, log_sigma: np.ndarray, target: Any, gas_constant: float
) -> Any:
    """Geopotential at ``target`` by integrating dΦ = −R T d ln p up from the centre just below it.

    T is taken linear in ln σ between centres, so Φ is the trapezoid rule of the model's own hydrostatic
    discretisation (dinosaur integrates centre to centre with the trapezoid rule in ln σ): the result is
    exact for the model's layers, with no interpolation error in Φ itself.

    Args:
        geopotential: (K, X, Y) Φ at the sigma-level centres.
        temperature: (K, X, Y) T at the centres (same nondimensional units as ``gas_constant``).
        log_sigma: (K,) ascending ln σ of the centres.
        target: (P, X, Y) ln σ of the target pressures in each column.
        gas_constant: R in the model's units.

    Returns:
        (P, X, Y) geopotential.
    """
    below = jnp.clip(jnp.searchsorted(log_sigma, target), 1, log_sigma.size - 1)
    phi_below = jnp.take_along_axis(geopotential, below, axis=0)
    t_below = jnp.take_along_axis(temperature, below, axis=0)
    t_target = interp_in_log_sigma(jnp, temperature, log_sigma, target)
    return phi_below + gas_constant * (jnp.asarray(log_sigma)[below] - target) * (t_below + t_target) / 2
