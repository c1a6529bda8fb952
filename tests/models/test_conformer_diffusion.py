"""The conformer diffusion family: Kabsch RMSD, equivariance, padding, forward marginals,
training, sampling, metrics and the figure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from collapse_jax import StaticConfig, make_chain
from collapse_jax.chain import draw_real
from collapse_jax.models.conformer import diffusion as dm
from collapse_jax.models.conformer.egnn import Denoiser
from collapse_jax.models.conformer.plot import kabsch_np, plot_conformers
from collapse_jax.models.conformer.rmsd import (
    bond_check,
    conformer_metrics,
    kabsch_align,
    kabsch_rmsd,
    rmsd_matrix,
)
from collapse_jax.models.nn import lecun_normal_state
from collapse_jax.pool import init_pool

rdkit = pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem, rdMolAlign  # noqa: E402

TINY = {"molecules": 3, "conformers": 8, "hidden": 16, "layers": 2, "diffusion_steps": 10,
        "steps": 300, "batch": 16, "eval_samples": 4, "eval_timesteps": 5}


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COLLAPSE_JAX_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _shape(seed: int, n: int = 9) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32) * 1.5


#: One compiled RMSD for every test below (pairs padded to ``SLOTS`` atoms with a mask).
SLOTS = 24
_rmsd = jax.jit(kabsch_rmsd)


def _padded_rmsd(a: np.ndarray, b: np.ndarray, junk: float = 0.0) -> float:
    """RMSD of ``a``, ``b`` ``[n, 3]`` padded to ``SLOTS`` atoms (padding filled with ``junk``
    times random numbers)."""
    n = a.shape[0]
    fill = np.random.default_rng(n).normal(size=(2, SLOTS - n, 3)) * junk
    pa = np.concatenate([a, fill[0]]).astype(np.float32)
    pb = np.concatenate([b, fill[1]]).astype(np.float32)
    return float(_rmsd(pa, pb, jnp.asarray(np.arange(SLOTS) < n)))


# ---------------------------------------------------------------------------------------------
# Kabsch RMSD


def test_kabsch_rmsd_invariant_to_rotation_translation_and_zero_for_identical():
    """Tolerance 1e-5 A (float32 on coordinates of a few A); a reflection (negative control) is
    not a rotation and leaves a clearly nonzero RMSD for a chiral (random) shape."""
    a, b = _shape(0), _shape(1)
    mask = jnp.ones(a.shape[0])
    base = float(_rmsd(a, b, mask))
    assert base > 0.5
    for seed in range(5):
        r, t = _rotation(seed), np.random.default_rng(seed).normal(size=3) * 5
        moved = (a @ r.T + t).astype(np.float32)
        assert abs(float(_rmsd(moved, b, mask)) - base) < 1e-5
        assert abs(float(_rmsd(b, moved, mask)) - base) < 1e-5
        assert float(_rmsd(moved, a, mask)) < 1e-5
        aligned, rmsd = jax.jit(kabsch_align)(moved, a, mask)
        assert float(rmsd) < 1e-5 and np.abs(np.asarray(aligned) - a).max() < 1e-4
    assert float(_rmsd(a, a, mask)) == 0.0
    mirrored = a * np.array([-1.0, 1.0, 1.0], np.float32)
    assert float(_rmsd(mirrored, a, mask)) > 0.3


def test_kabsch_rmsd_matches_svd_and_ignores_padding():
    """Against the SVD solution (float64 numpy) on 50 random pairs: 1e-5 A. Padded atoms with
    arbitrary coordinates (mask 0) change nothing."""
    rng = np.random.default_rng(3)
    for i in range(50):
        n = int(rng.integers(3, 20))
        a = rng.normal(size=(n, 3)) * 2
        b = a @ _rotation(i).T + rng.normal(size=(n, 3)) * rng.uniform(0, 2)
        assert abs(_padded_rmsd(a, b, junk=50.0) - kabsch_np(a, b)[1]) < 1e-5


def test_kabsch_rmsd_equals_rdkit_alignmol_on_real_molecules():
    """RDKit's AlignMol with the identity atom map (no symmetry search), heavy atoms, ETKDG
    conformers of three real molecules: equal within 1e-4 A (float32 vs float64)."""
    diffs = []
    for smi in ("CC(=O)NC1=CC=C(O)C=C1", "CCOC(=O)C1=CC=CC=C1N", "OCC1=CC=CC=C1CCN"):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        params = AllChem.ETKDGv3()
        params.randomSeed = 7
        AllChem.EmbedMultipleConfs(mol, 4, params)
        heavy = Chem.RemoveHs(mol)
        n = heavy.GetNumAtoms()
        pos = [heavy.GetConformer(c.GetId()).GetPositions() for c in heavy.GetConformers()]
        amap = [(i, i) for i in range(n)]
        for i in range(1, len(pos)):
            ours = _padded_rmsd(pos[i], pos[0])
            theirs = rdMolAlign.AlignMol(Chem.Mol(heavy), heavy, prbCid=i, refCid=0, atomMap=amap)
            assert theirs > 0.01
            diffs.append(abs(ours - theirs))
    assert max(diffs) < 1e-4, diffs


def test_coverage_and_matching_of_real_and_perturbed_conformers():
    """Real held-out conformers as 'samples' of themselves: COV 1, MAT 0. Adding 0.5 A noise
    (negative control) lowers COV at 0.5 A and raises MAT."""
    ref = jnp.asarray(np.stack([[_shape(10 * m + k) for k in range(3)] for m in range(2)]))
    mask = jnp.ones(ref.shape[:1] + ref.shape[2:3], bool)
    metrics = jax.jit(conformer_metrics, static_argnums=3)
    same = metrics(ref, ref, mask, 0.5)
    assert float(same["cov_r"]) == 1.0 and float(same["cov_p"]) == 1.0
    assert float(same["mat_r"]) < 1e-5
    noisy = ref + 0.5 * jax.random.normal(jax.random.key(0), ref.shape)
    worse = metrics(noisy, ref, mask, 0.5)
    assert float(worse["mat_r"]) > 0.3 and float(worse["cov_r"]) < 1.0
    assert rmsd_matrix(ref[0], ref[1, :2], mask[0]).shape == (3, 2)


# ---------------------------------------------------------------------------------------------
# The denoiser


def _net(hidden=16, layers=2, seed=0):
    graphdef, abstract = nnx.split(nnx.eval_shape(
        lambda: Denoiser(hidden, layers, rngs=nnx.Rngs(0))))
    state = lecun_normal_state(jax.random.key(seed), abstract)
    # random biases too, so nothing is trivially symmetric
    state = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(seed + 1),
                                                              x.shape), state)
    return lambda x, a, e, t: nnx.merge(graphdef, state)(x, a, e, t)


def _graph(n=7, a=10):
    atoms = np.zeros(a, np.int32)
    atoms[:n] = [2, 2, 3, 4, 2, 2, 4][:n]
    edges = np.zeros((a, a), np.int8)
    for i in range(n):
        for j in range(n):
            if i != j:
                edges[i, j] = 1 if abs(i - j) == 1 else 5 if abs(i - j) == 2 else 7
    return jnp.asarray(atoms), jnp.asarray(edges)


def test_denoiser_is_e3_equivariant():
    """predict_eps(R x + t) = R predict_eps(x) for rotations and translations: max deviation
    below 1e-4 (outputs are O(1); float32). Negative control: the output does change (by > 0.1)
    when the input rotates, so equivariance is not trivial invariance or zeros."""
    net, sch = _net(), dm.cosine_schedule(10)
    atoms, edges = _graph()
    mask = atoms > 0
    x = jnp.asarray(np.where(mask[:, None], _shape(5, 10), 0.0), jnp.float32)
    t = jnp.array([3, 9], jnp.int32)
    batch = jax.jit(lambda y: dm.predict_eps(net, sch, jnp.stack([y, y]),
                                             jnp.stack([atoms] * 2), jnp.stack([edges] * 2), t))
    out = np.asarray(batch(x))
    for seed in range(3):
        r = _rotation(seed).astype(np.float32)
        shift = np.random.default_rng(seed).normal(size=3).astype(np.float32) * 4
        moved = jnp.where(mask[:, None], x @ r.T + shift[None], 0.0)
        out_moved = np.asarray(batch(moved))
        assert np.abs(out_moved - out @ r.T).max() < 1e-4
        assert np.abs(out_moved - out).max() > 0.1
    assert np.abs(out[:, ~np.asarray(mask)]).max() == 0.0


def test_denoiser_ignores_padding():
    """The same molecule padded to 10 and to 16 atom slots, with arbitrary coordinates in the
    padding: real-atom outputs agree to 1e-5 and padded outputs are 0. Negative control: the
    same change to a real atom's coordinates changes the output."""
    net = jax.jit(_net())
    atoms10, edges10 = _graph(7, 10)
    atoms16, edges16 = _graph(7, 16)
    x = _shape(2, 7)
    x = x - x.mean(0)
    x10 = np.zeros((10, 3), np.float32)
    x10[:7] = x
    x16 = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32) * 30
    x16[:7] = x
    t = jnp.float32(0.4)
    out10 = np.asarray(net(jnp.asarray(x10), atoms10, edges10, t))
    out16 = np.asarray(net(jnp.asarray(x16), atoms16, edges16, t))
    assert np.abs(out10[:7] - out16[:7]).max() < 1e-5
    assert np.abs(out16[7:]).max() == 0.0
    x10b = x10.copy()
    x10b[0] += 0.5
    assert np.abs(np.asarray(net(jnp.asarray(x10b), atoms10, edges10, t))[:7]
                  - out10[:7]).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Forward process


def _forward_chain(sch, x0, mask, key, draws, shift=0):
    """Run the forward Markov chain t = 1..T for ``draws`` copies; returns ``[T, draws, A, 3]``."""

    def body(x, t):
        eps = dm.com_free_noise(jax.random.fold_in(key, t), jnp.broadcast_to(mask, x.shape[:2]))
        x = dm.forward_step(sch, x, t + shift, eps)
        return x, x

    xs = jnp.broadcast_to(x0, (draws, *x0.shape))
    _, out = jax.lax.scan(body, xs, jnp.arange(1, sch.steps + 1, dtype=jnp.int32))
    return out


@pytest.mark.parametrize("wrong", [False, True])
def test_forward_chain_matches_closed_form_marginals(wrong):
    """q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) P), P = I - 11^T/n on real atoms: 20,000
    forward chains step by step; at every t the empirical mean of each coordinate is within 5
    standard errors of sqrt(abar_t) x_0, and the empirical variance within 5 s.e. (s.e. of a
    Gaussian variance, sqrt(2/N) sigma^2) of (1 - abar_t)(1 - 1/n). Padding stays exactly 0.
    Negative control (``wrong``): the chain run with its schedule shifted by one step fails."""
    sch = dm.cosine_schedule(8)
    atoms, _ = _graph(6, 8)
    mask = atoms > 0
    x0 = jnp.asarray(np.where(mask[:, None], _shape(4, 8), 0.0), jnp.float32)
    x0 = x0 - jnp.sum(x0, 0, keepdims=True) / 6 * mask[:, None].astype(jnp.float32)
    draws = 20000
    xs = _forward_chain(sch, x0, mask, jax.random.key(1), draws, shift=int(wrong))
    zs = []
    for t in range(1, sch.steps + 1):
        x = np.asarray(xs[t - 1], np.float64)[:, :6]
        ab = float(sch.alpha_bar[t])
        var = (1.0 - ab) * (1.0 - 1.0 / 6)
        mean_z = (x.mean(0) - np.sqrt(ab) * np.asarray(x0)[:6]) / np.sqrt(var / draws)
        var_z = (x.var(0) - var) / (var * np.sqrt(2.0 / draws))
        zs.append(max(np.abs(mean_z).max(), np.abs(var_z).max()))
        assert np.abs(np.asarray(xs[t - 1])[:, 6:]).max() == 0.0
    if wrong:
        assert max(zs) > 5.0
    else:
        assert max(zs) < 5.0, zs
        # the closed form itself (q_sample) draws the same marginal
        t = jnp.full((draws,), 5, jnp.int32)
        eps = dm.com_free_noise(jax.random.key(2), jnp.broadcast_to(mask, (draws, 8)))
        direct = np.asarray(dm.q_sample(sch, jnp.broadcast_to(x0, (draws, 8, 3)), t, eps))
        chain5 = np.asarray(xs[4])
        se = np.sqrt((1 - float(sch.alpha_bar[5])) / draws)
        assert np.abs(direct.mean(0) - chain5.mean(0)).max() < 5 * np.sqrt(2) * se


# ---------------------------------------------------------------------------------------------
# The family: training lowers the held-out loss, sampling, metrics


@pytest.fixture(scope="module")
def family():
    static = StaticConfig(model="conformer_diffusion", regime="replace", n0=15, n=15, d=10,
                          generations=2, n_test=6, options=tuple(sorted(TINY.items())))
    chain = make_chain(static)
    args = chain.source.load(static)
    hp = {"lr": jnp.float32(3e-3)}
    real = draw_real(chain, jax.random.key(0), hp, args)
    model = chain.model
    params0 = model.init(jax.random.key(1), real, hp)
    fit = jax.jit(lambda k, p, q: model.fit(k, p, q, hp))
    params = fit(jax.random.key(2), init_pool(real.train, 15), params0)
    evaluate = jax.jit(lambda p: model.evaluate(p, real, hp))
    sample = jax.jit(lambda k, p: model.sample(k, p, real, hp, 7))
    return {"static": static, "args": args, "real": real, "model": model, "hp": hp,
            "params0": params0, "params": params, "evaluate": evaluate, "sample": sample}


def test_training_lowers_heldout_denoising_loss(family):
    """300 Adam steps on 15 real conformers of 3 molecules lower the held-out denoising loss
    (fixed timesteps and noise) by at least 30% from the untrained network."""
    before = family["evaluate"](family["params0"])
    after = family["evaluate"](family["params"])
    assert float(after["test_loss"]) < 0.7 * float(before["test_loss"]), (before, after)
    for name, v in after.items():
        assert v.shape == () and v.dtype == jnp.float32 and np.isfinite(float(v)), name
    assert 0.0 <= float(after["cov_r"]) <= 1.0 and float(after["mat_r"]) > 0.0


def test_samples_are_new_centred_conformers_of_the_same_molecules(family):
    """Shapes, molecules round robin, graphs copied from the truth tables, centred, zero on
    padding; the same key gives the same samples, another key other samples."""
    s = family["sample"](jax.random.key(5), family["params"])
    truth = family["real"].truth
    m = truth["atoms"].shape[0]
    assert s["coords"].shape == (7, 10, 3) and s["coords"].dtype == jnp.float32
    np.testing.assert_array_equal(s["mol"], np.arange(7) % m)
    np.testing.assert_array_equal(s["atoms"], np.asarray(truth["atoms"])[np.arange(7) % m])
    np.testing.assert_array_equal(s["edges"], np.asarray(truth["edges"])[np.arange(7) % m])
    mask = np.asarray(s["atoms"]) > 0
    c = np.asarray(s["coords"])
    assert np.abs(c[~mask]).max() == 0.0
    assert np.abs((c * mask[..., None]).sum(1)).max() < 1e-3
    assert np.all(np.isfinite(c)) and np.abs(c).max() < 50
    again = family["sample"](jax.random.key(5), family["params"])
    np.testing.assert_array_equal(s["coords"], again["coords"])
    other = family["sample"](jax.random.key(6), family["params"])
    assert np.abs(np.asarray(other["coords"]) - c).max() > 0.1


def test_real_conformers_pass_the_bond_check(family):
    """Real training conformers: every bond within 0.1 A of its mean (validity 1); the same
    conformers with 0.3 A noise (negative control) fail."""
    real = family["real"]
    mol = real.train["mol"]
    ref = real.truth["bond_ref"][mol]
    ok, err = bond_check(real.train["coords"], real.train["edges"], ref, 0.1)
    assert float(ok) == 1.0 and float(err) < 0.05
    noisy = real.train["coords"] + 0.3 * jax.random.normal(jax.random.key(0),
                                                             real.train["coords"].shape)
    bad, err2 = bond_check(noisy, real.train["edges"], ref, 0.1)
    assert float(bad) < 0.2 and float(err2) > 0.1


def test_plot_conformers_writes_a_png(family, tmp_path):
    s0 = jax.tree.map(np.asarray, family["sample"](jax.random.key(1), family["params0"]))
    s1 = jax.tree.map(np.asarray, family["sample"](jax.random.key(2), family["params"]))
    samples = {"replace": {0: s0, 4: s1}, "accumulate": {0: s0, 4: s1}}
    path = plot_conformers(samples, family["args"], tmp_path / "fig" / "conformers.png")
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
