"""An E(n)-equivariant graph network (EGNN) that predicts the noise of noisy atom coordinates.

One conformer at a time (``vmap`` over conformers): atoms ``i`` carry invariant features ``h_i``
(atom type one-hot and the diffusion time) and coordinates ``x_i``; every pair of real atoms
exchanges a message built from invariants only, ``m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, e_ij)``,
where ``e_ij`` is the one-hot edge code of the molecular graph (bond type, or 2 / 3 / more bonds
apart: ``data.conformers.edge_codes``). Each layer then updates

    h_i <- h_i + phi_h(h_i, mean_j m_ij)
    x_i <- x_i + mean_j (x_i - x_j) / (|x_i - x_j| + 1) * tanh(phi_x(m_ij)) * COORD_RANGE

(Satorras et al. 2021, with the normalised difference and bounded coordinate step of Hoogeboom
et al. 2022). Messages only use distances and the updates move atoms along differences, so the
predicted noise ``x^L - x^0`` (mean removed over real atoms) rotates with the input and ignores
translations: the network is E(3)-equivariant (reflections included). Padding atoms (type 0) send
and receive nothing and get zero output, so padding does not change the real atoms' output.

The first edge layer is split by input (``h_i W_s + h_j W_d + [d_ij^2, e_ij] W_e``): the same
function as one linear layer on the concatenation, at ``A H^2`` instead of ``A^2 H^2`` cost.

References:
    Satorras, Hoogeboom & Welling 2021, "E(n) Equivariant Graph Neural Networks", ICML,
        arXiv:2102.09844.
    Hoogeboom, Satorras, Vignac & Welling 2022, "Equivariant Diffusion for Molecule Generation
        in 3D", ICML, arXiv:2203.17003.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from collapse_jax.data.conformers import NUM_ATOM_TYPES, NUM_EDGE_TYPES
from collapse_jax.models.conformer.diffusion import remove_mean

#: Largest coordinate move of one layer along one pair direction (Angstrom, via tanh).
COORD_RANGE = 4.0


class EGNNLayer(nnx.Module):
    """One equivariant message-passing layer (see the module docstring)."""

    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.edge_src = nnx.Linear(hidden, hidden, rngs=rngs)
        self.edge_dst = nnx.Linear(hidden, hidden, use_bias=False, rngs=rngs)
        self.edge_geo = nnx.Linear(1 + NUM_EDGE_TYPES, hidden, use_bias=False, rngs=rngs)
        self.edge_out = nnx.Linear(hidden, hidden, rngs=rngs)
        self.node_hid = nnx.Linear(2 * hidden, hidden, rngs=rngs)
        self.node_out = nnx.Linear(hidden, hidden, rngs=rngs)
        self.coord_hid = nnx.Linear(hidden, hidden, rngs=rngs)
        self.coord_out = nnx.Linear(hidden, 1, use_bias=False, rngs=rngs)

    def __call__(self, h, x, e, pair, inv_deg):
        """``h [A, H]``, ``x [A, 3]``, ``e [A, A, E]``, ``pair [A, A]``, ``inv_deg [A]``."""
        diff = x[:, None, :] - x[None, :, :]
        d2 = jnp.sum(diff * diff, axis=-1, keepdims=True)
        pre = (self.edge_src(h)[:, None, :] + self.edge_dst(h)[None, :, :]
               + self.edge_geo(jnp.concatenate([d2, e], axis=-1)))
        m = jax.nn.silu(self.edge_out(jax.nn.silu(pre))) * pair[..., None]
        agg = jnp.sum(m, axis=1) * inv_deg[:, None]
        h = h + self.node_out(jax.nn.silu(self.node_hid(jnp.concatenate([h, agg], axis=-1))))
        step = jnp.tanh(self.coord_out(jax.nn.silu(self.coord_hid(m)))) * COORD_RANGE
        unit = diff / (jnp.sqrt(d2 + 1e-8) + 1.0)
        x = x + jnp.sum(unit * step * pair[..., None], axis=1) * inv_deg[:, None]
        return h, x


class Denoiser(nnx.Module):
    """EGNN noise predictor ``(x_t, atoms, edges, t/T) -> eps_hat`` for one conformer."""

    def __init__(self, hidden: int, layers: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Linear(NUM_ATOM_TYPES + 1, hidden, rngs=rngs)
        self.layers = nnx.List([EGNNLayer(hidden, rngs=rngs) for _ in range(layers)])

    def __call__(self, x: jax.Array, atoms: jax.Array, edges: jax.Array,
                 t: jax.Array) -> jax.Array:
        """Predicted noise.

        Args:
            x: ``[A, 3]`` noisy coordinates.
            atoms: ``[A]`` int atom type codes (0 = padding).
            edges: ``[A, A]`` int edge codes.
            t: scalar diffusion time in ``[0, 1]``.

        Returns:
            ``[A, 3]``: zero on padding, zero mean over real atoms.
        """
        mask = (atoms > 0).astype(jnp.float32)
        a = atoms.shape[0]
        pair = mask[:, None] * mask[None, :] * (1.0 - jnp.eye(a, dtype=jnp.float32))
        n = jnp.sum(mask)
        inv_deg = jnp.full((a,), 1.0, jnp.float32) / jnp.maximum(n - 1.0, 1.0)
        feats = jnp.concatenate([jax.nn.one_hot(atoms, NUM_ATOM_TYPES, dtype=jnp.float32),
                                 jnp.broadcast_to(t.astype(jnp.float32), (a, 1))], axis=-1)
        h = self.embed(feats)
        e = jax.nn.one_hot(edges.astype(jnp.int32), NUM_EDGE_TYPES, dtype=jnp.float32)
        x0 = x * mask[:, None]
        y = x0
        for layer in self.layers:
            h, y = layer(h, y, e, pair, inv_deg)
        return remove_mean((y - x0) * mask[:, None], mask)
