"""collapse_jax.linalg: one-matrix-at-a-time LAPACK calls on multi-device CPU (no deadlock)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax import linalg as L


@pytest.fixture
def force(monkeypatch):
    def set_mode(on):
        monkeypatch.setattr(L, "PER_MATRIX", on)
    return set_mode


def _spd(key, shape, d):
    a = jax.random.normal(key, (*shape, d, d))
    return a @ jnp.swapaxes(a, -1, -2) + jnp.broadcast_to(d * jnp.eye(d), a.shape)


CASES = {
    "cholesky": lambda a, b: L.cholesky(a),
    "eigh": lambda a, b: L.eigh(a),
    "eigvalsh": lambda a, b: L.eigvalsh(a),
    "qr_r": lambda a, b: L.qr_r(b),
    "solve_lower": lambda a, b: L.solve_triangular(jnp.tril(a), b[..., :4, :], lower=True),
    "solve_upper": lambda a, b: L.solve_triangular(jnp.triu(a), b[..., 2:, :], lower=False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_matrix_calls_give_the_same_bits_as_batched_calls(force, name):
    fn = CASES[name]
    a = _spd(jax.random.key(0), (3, 5), 4)  # [3, 5, 4, 4]
    b = jax.random.normal(jax.random.key(1), (3, 5, 6, 4))  # tall [6, 4] matrices
    variants = {
        "batch axes": lambda: fn(a, b),
        "vmap": lambda: jax.vmap(fn)(a, b),
        "vmap of vmap": lambda: jax.vmap(jax.vmap(fn))(a, b),
        "jit vmap, one side unbatched": lambda: jax.jit(jax.vmap(fn, in_axes=(0, None)))(
            a, b[0]),
    }
    for label, run in variants.items():
        force(False)
        want = run()
        force(True)
        got = run()
        for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
            assert w.shape == g.shape, (label, w.shape, g.shape)
            np.testing.assert_array_equal(np.asarray(w), np.asarray(g), err_msg=label)


def test_per_matrix_by_default_on_cpu(force):
    force(None)
    assert L.per_matrix() == (jax.default_backend() == "cpu")


def test_two_fake_cpu_devices_do_not_hang_in_batched_lapack(tmp_path):
    """Gaussian chains on 2 fake devices: before collapse_jax.linalg, 256 chains hung in the first
    generation's batched QR (one per device, at once, blocking both pool threads of the 2 cores
    forever), and 4,096 chains in the batched triangular solve of the nll."""
    script = textwrap.dedent("""
        import collapse_jax as cj, jax, numpy as np
        from collapse_jax.sweep import run_sweep
        assert jax.device_count() == 2
        static = cj.StaticConfig(model="gaussian", regime="accumulate", n0=100, n=100, d=10,
                                 generations=3, n_test=100)
        for c in (256, 4096):
            hp = {"sigma": np.ones(c, np.float32), "scale": np.ones(c, np.float32)}
            r = run_sweep(static, jax.random.key(0), np.arange(c), hp, {}, chunk_size=c)
            assert np.isfinite(r.metrics["trace_ratio"]).all()
        print("ok")
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    try:
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("the 2-device sweep hung (batched LAPACK deadlock)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
