"""The compiled programs (``collapse_jax.programs``): only the generation-0 program draws the
chains' real data; the advance program takes it as an argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import collapse_jax as cj
from collapse_jax.mesh import make_mesh


def test_real_data_is_drawn_by_generation_zero_only(monkeypatch):
    """The advance program takes the chains' real data as an argument: only the generation-0
    program draws it. Drawing it again in every advance call made short calls cost more than
    their generations (linear regression, 10,000 chains, d = 32: 0.65 s per call for two
    100 x 32 designs per chain, against 0.02 s per generation)."""
    from collapse_jax import chain as C
    from collapse_jax import programs

    static = cj.StaticConfig(model="linear_regression", regime="replace", n0=9, n=9, d=3,
                             generations=5, n_test=7)
    draws = []
    real_draw = C.draw_real
    monkeypatch.setattr(C, "draw_real", lambda *a: draws.append(1) or real_draw(*a))
    mesh, impl = make_mesh(), "threefry2x32"
    state, real = programs.abstract_state(static, {}, 2, mesh)
    draws.clear()
    ids = jax.ShapeDtypeStruct((2,), jnp.int32)
    hp = {"sigma": jax.ShapeDtypeStruct((2,), jnp.float32)}
    root, g = jax.ShapeDtypeStruct((2,), jnp.uint32), jax.ShapeDtypeStruct((), jnp.int32)
    programs.advance_program(static, impl, mesh, 4).lower(state, real, g, g, root, ids, hp, {})
    assert draws == []
    programs.init_program(static, impl, mesh).lower(root, ids, hp, {})
    assert draws == [1]
