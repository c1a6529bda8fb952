"""The ``conformers`` source: real molecular conformers as a chain's data.

How a chain's data maps to the engine (``d`` = the padded atom count ``A``):

- a pool **example is one conformer**, a dict with leading axis ``num``: ``coords [num, A, 3]``
  float32 (Angstrom, centred), ``atoms [num, A]`` int32 atom type codes (``atom_types``; 0 =
  padding), ``edges [num, A, A]`` int8 edge codes (``edge_codes``) and ``mol [num]`` int32 (the
  molecule index). The graph travels with every conformer, so ``fit`` needs nothing but the
  pool (the regimes move it like any other leaf; 0.5 KB per conformer at ``A = 16``).
- molecules are assigned **round robin**: slot ``i`` of D0, of the held-out set and of every
  synthetic batch belongs to molecule ``i mod M``. D0 (``n0`` examples) takes, per chain, a
  random draw without replacement of each molecule's training conformers; the ``n`` samples of a
  generation are new conformers of the same molecules in the same order.
- the held-out set (``n_test`` examples, ``n_test / M`` per molecule, the same for every chain)
  is **held-out conformers of the same molecules**: the model learns each training molecule's
  conformer distribution, and the metrics (denoising loss, COV / MAT against these references)
  measure how far it drifts from that real distribution. Slot ``i`` holds conformer ``i // M``
  of molecule ``i mod M`` (so ``test.reshape(R, M, ...)`` groups it by molecule).
- ``real.truth`` holds the graph tables the sampler and the bond check need: ``atoms [M, A]``,
  ``edges [M, A, A]`` and ``bond_ref [M, A, A]`` (mean bond length of each bond over the
  molecule's real training conformers, 0 where no bond), and every real training conformer
  ``coords_train [M, C - R, A, 3]`` (``fresh_real_mix`` draws fresh real conformers from it).
  They come from the source's host args (unbatched under ``vmap``: one copy for all chains).

Options (the ``conformer_diffusion`` model's): ``molecules`` (M), ``conformers`` (per molecule,
training + held-out), ``min_atoms``, ``hydrogens``, ``mmff``, ``embed_seed``. ``data_path`` is a
conformer ``.npz`` (``molecules.NPZ_KEYS``; the first ``molecules`` molecules and first
``conformers`` conformers of each are used) or a SMILES file (``.smi``/``.txt``) replacing
RDKit's NCI list.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax import rng
from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.data import molecules as mols
from collapse_jax.model import Source, register_source
from collapse_jax.types import RealData

#: Atom type codes: 1 + index of the element here, ``OTHER`` for any other element, 0 = padding.
ELEMENTS = (1, 6, 7, 8, 9, 15, 16, 17, 35, 53)
OTHER = len(ELEMENTS) + 1
NUM_ATOM_TYPES = OTHER + 1
#: Edge codes: 0 self / padding, 1-4 bond types (``molecules.BOND_TYPES``), 5 two bonds apart,
#: 6 three bonds apart, 7 farther (or not connected). The 2- and 3-hop codes carry the angle and
#: torsion structure an E(3)-invariant network cannot read from bonds alone.
NUM_EDGE_TYPES = 8
#: Defaults of the source's options.
DEFAULTS = {"molecules": 20, "conformers": 30, "min_atoms": 8, "hydrogens": False,
            "mmff": False, "embed_seed": 42}


def atom_types(atomic_numbers: np.ndarray) -> np.ndarray:
    """Atom type codes (``[..., A]`` int32) of atomic numbers (0 = padding stays 0).

    >>> atom_types(np.array([6, 8, 0, 26])).tolist()
    [2, 4, 0, 11]
    """
    z = np.asarray(atomic_numbers)
    table = np.full(max(max(ELEMENTS), int(z.max(initial=0))) + 1, OTHER, np.int32)
    table[0] = 0
    table[list(ELEMENTS)] = np.arange(1, len(ELEMENTS) + 1, dtype=np.int32)
    return table[z].astype(np.int32)


def edge_codes(bonds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Edge codes ``[M, A, A]`` int8 from bond types ``[M, A, A]`` and atom masks ``[M, A]``.

    Graph distances by repeated boolean matrix products (the graphs are small).

    >>> b = np.zeros((1, 4, 4), np.int8)
    >>> for i in range(3):
    ...     b[0, i, i + 1] = b[0, i + 1, i] = 1
    >>> edge_codes(b, np.ones((1, 4), bool))[0].tolist()
    [[0, 1, 5, 6], [1, 0, 1, 5], [5, 1, 0, 1], [6, 5, 1, 0]]
    """
    adj = bonds > 0
    reach = adj.copy()
    hop = [adj]
    for _ in range(2):  # reach within 2 and 3 bonds
        reach = reach | (np.einsum("mij,mjk->mik", reach.astype(np.int32),
                                   adj.astype(np.int32)) > 0)
        hop.append(reach)
    a = bonds.shape[-1]
    pair = mask[:, :, None] & mask[:, None, :] & ~np.eye(a, dtype=bool)[None]
    code = np.full(bonds.shape, 7, np.int8)
    code = np.where(hop[2], 6, code)
    code = np.where(hop[1], 5, code)
    code = np.where(adj, bonds, code)
    return np.where(pair, code, 0).astype(np.int8)


def encode_smiles(smiles: tuple[str, ...]) -> np.ndarray:
    """SMILES as a ``[M, L]`` uint8 array (ASCII, zero padded): host args must be arrays."""
    width = max([len(s) for s in smiles] + [1])
    out = np.zeros((len(smiles), width), np.uint8)
    for i, s in enumerate(smiles):
        b = s.encode("ascii", "replace")
        out[i, : len(b)] = np.frombuffer(b, np.uint8)
    return out


def decode_smiles(codes: np.ndarray) -> list[str]:
    """Inverse of ``encode_smiles``.

    >>> decode_smiles(encode_smiles(("CCO", "c1ccccc1")))
    ['CCO', 'c1ccccc1']
    """
    return [bytes(row[row > 0].tolist()).decode("ascii") for row in np.asarray(codes)]


def option(static: StaticConfig, name: str):
    """A source option of ``static`` (its default from ``DEFAULTS``)."""
    return static.option(name, DEFAULTS[name])


def is_smiles_file(path: str) -> bool:
    """Whether ``data_path`` names a SMILES list (``.smi``, ``.smiles``, ``.txt``), not a
    conformer ``.npz``."""
    return path.lower().endswith((".smi", ".smiles", ".txt"))


def conformer_set(static: StaticConfig) -> mols.ConformerSet:
    """The molecules and conformers ``static`` asks for (generated and cached, or the user's)."""
    m, c = option(static, "molecules"), option(static, "conformers")
    path = static.data_path
    if path and not is_smiles_file(path):
        cset = _pad_atoms(mols.load_npz(path), static.d, path)
        if len(cset.smiles) < m:
            raise ConfigError(f"options.molecules={m}: data_path={path!r} holds "
                              f"{len(cset.smiles)} molecules")
        if cset.coords.shape[1] < c:
            raise ConfigError(f"options.conformers={c}: data_path={path!r} holds "
                              f"{cset.coords.shape[1]} conformers per molecule")
        return mols.ConformerSet(cset.smiles[:m], cset.atomic_numbers[:m], cset.bonds[:m],
                                 cset.coords[:m, :c], cset.mask[:m])
    check_atoms(static)
    rule = mols.SelectionRule(min_atoms=option(static, "min_atoms"), max_atoms=static.d,
                              hydrogens=option(static, "hydrogens"))
    return mols.cached_conformers(rule, m, c, seed=option(static, "embed_seed"),
                                  mmff=option(static, "mmff"), smiles_file=path)


def _pad_atoms(cset: mols.ConformerSet, d: int, path: str) -> mols.ConformerSet:
    a = cset.mask.shape[1]
    if a > d:
        if cset.mask[:, d:].any():
            raise ConfigError(f"d={d}: data_path={path!r} has molecules with up to "
                              f"{int(cset.mask.sum(1).max())} atoms in {a} slots; use d >= {a}")
        return mols.ConformerSet(cset.smiles, cset.atomic_numbers[:, :d],
                                 cset.bonds[:, :d, :d], cset.coords[:, :, :d], cset.mask[:, :d])
    p = d - a
    return mols.ConformerSet(
        cset.smiles, np.pad(cset.atomic_numbers, ((0, 0), (0, p))),
        np.pad(cset.bonds, ((0, 0), (0, p), (0, p))),
        np.pad(cset.coords, ((0, 0), (0, 0), (0, p), (0, 0))), np.pad(cset.mask, ((0, 0), (0, p))))


def check_atoms(static: StaticConfig) -> None:
    """Raise ``ConfigError`` when no molecule can pass ``min_atoms <= atoms <= d``."""
    if option(static, "min_atoms") > static.d:
        raise ConfigError(f"d={static.d}: smaller than options.min_atoms="
                          f"{option(static, 'min_atoms')}, so no molecule can be selected; "
                          f"use d >= min_atoms")


def check_sizes(static: StaticConfig, m: int, c: int) -> int:
    """Raise ``ConfigError`` unless ``n_test`` and ``n0`` fit ``m`` molecules x ``c`` conformers;
    return the held-out conformers per molecule ``R = n_test / m``."""
    if static.n_test % m:
        raise ConfigError(f"n_test={static.n_test}: must be a multiple of the number of "
                          f"molecules ({m}): n_test / {m} held-out conformers per molecule")
    r = static.n_test // m
    if r >= c:
        raise ConfigError(f"n_test={static.n_test}: holds out {r} of the {c} conformers per "
                          f"molecule, leaving none to train on; use n_test <= {m * (c - 1)} or "
                          f"more options.conformers")
    if static.n0 > m * (c - r):
        raise ConfigError(f"n0={static.n0}: at most {m} molecules x {c - r} training conformers "
                          f"= {m * (c - r)} real training conformers (options.conformers={c}, "
                          f"n_test={static.n_test})")
    return r


@functools.lru_cache(maxsize=16)
def _load(static: StaticConfig) -> dict[str, np.ndarray]:
    cset = conformer_set(static)
    m, c = cset.coords.shape[:2]
    r = check_sizes(static, m, c)
    train, test = cset.coords[:, : c - r], cset.coords[:, c - r:]
    edges = edge_codes(cset.bonds, cset.mask)
    # Reference bond lengths: mean over each molecule's real training conformers.
    dist = np.linalg.norm(train[:, :, :, None] - train[:, :, None, :], axis=-1).mean(axis=1)
    bond_ref = np.where(cset.bonds > 0, dist, 0.0).astype(np.float32)
    return {"coords_train": train.astype(np.float32), "coords_test": test.astype(np.float32),
            "atoms": atom_types(cset.atomic_numbers), "edges": edges, "bond_ref": bond_ref,
            "smiles": encode_smiles(cset.smiles)}


def load_args(static: StaticConfig) -> dict[str, np.ndarray]:
    """``Source.load``: host arrays (see the module docstring), cached per static config.

    Keys: ``coords_train [M, C - R, A, 3]``, ``coords_test [M, R, A, 3]``, ``atoms [M, A]``,
    ``edges [M, A, A]`` int8, ``bond_ref [M, A, A]``, ``smiles [M, L]`` uint8.
    """
    if static.d < 2:
        raise ConfigError(f"d={static.d}: the padded atom count; must be >= 2")
    return _load(_source_static(static))


def _source_static(static: StaticConfig) -> StaticConfig:
    """``static`` reduced to what the data depends on (one load for every regime)."""
    keep = tuple((k, v) for k, v in static.options if k in DEFAULTS)
    return StaticConfig(model=static.model, regime="", n0=static.n0, n=0, d=static.d,
                        generations=0, n_test=static.n_test, data_path=static.data_path,
                        options=keep)


def examples(args, mol: jax.Array, coords: jax.Array) -> dict[str, jax.Array]:
    """Pool examples of molecules ``mol [num]`` with coordinates ``[num, A, 3]``."""
    return {"coords": coords.astype(jnp.float32),
            "atoms": jnp.asarray(args["atoms"], jnp.int32)[mol],
            "edges": jnp.asarray(args["edges"], jnp.int8)[mol],
            "mol": mol.astype(jnp.int32)}


def round_robin(num: int, m: int) -> tuple[jax.Array, jax.Array]:
    """Molecule ``i mod m`` and rank ``i // m`` of slots ``0 .. num - 1``."""
    i = jnp.arange(num, dtype=jnp.int32)
    return i % m, i // m


def truth(args) -> dict[str, jax.Array]:
    """``real.truth``: the graph tables and every real training conformer (for fresh draws)."""
    return {"atoms": jnp.asarray(args["atoms"], jnp.int32),
            "edges": jnp.asarray(args["edges"], jnp.int8),
            "bond_ref": jnp.asarray(args["bond_ref"], jnp.float32),
            "coords_train": jnp.asarray(args["coords_train"], jnp.float32)}


@register_source("conformers")
def conformer_source(static: StaticConfig) -> Source:
    """Real conformers of RDKit's NCI molecules (or a user's file); see the module docstring."""
    n0 = static.n0

    def draw(key, hparams, args):
        # The held-out set is every held-out conformer the args hold (n_test of them, as
        # loaded): its size comes from the args' shapes, not from the static config.
        del hparams
        train = jnp.asarray(args["coords_train"], jnp.float32)
        test = jnp.asarray(args["coords_test"], jnp.float32)
        (m, ct), r = train.shape[:2], test.shape[1]
        mol, rank = round_robin(n0, m)
        perm = jnp.argsort(rng.uniform(key, (m * ct,)).reshape(m, ct), axis=1).astype(jnp.int32)
        d0 = examples(args, mol, train[mol, perm[mol, rank]])
        mol_t, rank_t = round_robin(m * r, m)
        held = examples(args, mol_t, test[mol_t, rank_t])
        return RealData(d0, held, truth(args))

    def fresh(key, hparams, args, real, num):
        # From real.truth (the same arrays as the args): the chain may call this without args.
        del hparams, args
        tables = real.truth
        m, ct = tables["coords_train"].shape[:2]
        mol, _ = round_robin(num, m)
        conf = jnp.minimum(jnp.floor(rng.uniform(key, (num,)) * ct).astype(jnp.int32), ct - 1)
        return examples(tables, mol, tables["coords_train"][mol, conf])

    return Source(load_args, draw, fresh)
