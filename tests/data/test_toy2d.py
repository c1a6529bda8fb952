"""The 2-D toy sources (``collapse_jax.data.toy2d``): moons and circles lie on their curves at the
right scale; the noise is isotropic standard normal (KS tests) and a fair coin picks the
component.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax.data.toy2d import toy_points


def test_toy_sources_shapes_and_scale():
    k_moons, k_circles = jax.random.split(jax.random.key(2))
    moons = toy_points("moons", k_moons, 4000, 0.0)
    assert moons.shape == (4000, 2) and moons.dtype == jnp.float32
    r_outer = jnp.hypot(moons[:, 0], moons[:, 1])
    r_inner = jnp.hypot(moons[:, 0] - 1.0, moons[:, 1] - 0.5)
    assert bool(jnp.all(jnp.minimum(jnp.abs(r_outer - 1), jnp.abs(r_inner - 1)) < 1e-5))
    circles = toy_points("circles", k_circles, 1000, 0.0)
    r = np.sort(np.unique(np.round(np.asarray(jnp.hypot(circles[:, 0], circles[:, 1])), 4)))
    np.testing.assert_allclose(r, [0.8, 1.0], atol=1e-4)


@pytest.mark.parametrize("name", ["moons", "circles", "swiss_roll"])
def test_toy_sources_noise_is_isotropic_normal_and_components_fair(name):
    # the same key with and without noise: the difference is noise * z, z ~ N(0, I_2) from the
    # Box-Muller transform; KS tests at alpha 1e-3 / 9 (3 sources x 3 tests, Bonferroni)
    from scipy import stats

    key, num, sigma = jax.random.key(4), 20_000, 0.3
    clean = np.asarray(toy_points(name, key, num, 0.0), np.float64)
    z = (np.asarray(toy_points(name, jax.random.clone(key), num, sigma), np.float64) - clean)
    z /= sigma
    alpha = 1e-3 / 9
    for col in (0, 1):
        assert stats.kstest(z[:, col], "norm").pvalue > alpha, (name, col)
    # jointly: |z|^2 ~ chi^2_2 (a check of the pair, not only of the marginals)
    assert stats.kstest((z**2).sum(1), "chi2", args=(2,)).pvalue > alpha, name
    if name != "swiss_roll":  # a fair coin picks the component
        r = np.hypot(clean[:, 0], clean[:, 1]) if name == "circles" else np.hypot(
            clean[:, 0] - 1.0, clean[:, 1] - 0.5)
        inner = np.isclose(r, 0.8 if name == "circles" else 1.0, atol=1e-4)
        if name == "moons":  # inner moon: centred (1, 0.5), below its centre
            inner &= clean[:, 1] <= 0.5 + 1e-5
        frac = inner.mean()
        assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / num), frac
