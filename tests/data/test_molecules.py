"""Real molecules and conformers: selection, ETKDG determinism, the cache, user files, the
source's data layout, and bad inputs (ConfigError naming the field; exit 2 through the CLI)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from collapse_jax import StaticConfig, cli
from collapse_jax.config import ConfigError
from collapse_jax.data import conformers as src
from collapse_jax.data import molecules as mols

pytest.importorskip("rdkit")

RULE = mols.SelectionRule(min_atoms=8, max_atoms=12)
FIRST = [(1, "CCC1=C(N)C=C(C)N=C1"), (2, "[Na+].[Cl-]"), (3, "CC1=C(CO)C=CC=C1"),
         (4, "C1=CC=CC=C1"), (5, "CCOC(=O)C1=CC=CC=C1NC")]


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLAPSE_JAX_DATA_DIR", str(tmp_path / "data"))
    src._load.cache_clear()
    return tmp_path / "data"


def _static(**kw) -> StaticConfig:
    options = {"molecules": 2, "conformers": 5, **kw.pop("options", {})}
    base = dict(model="conformer_diffusion", regime="replace", n0=6, n=6, d=12, generations=2,
                n_test=4, options=tuple(sorted(options.items())))
    return StaticConfig(**{**base, **kw})


def test_nci_file_ships_with_rdkit_and_the_rule_selects_drug_like_molecules():
    entries = mols.read_smiles(mols.nci_smiles_path())
    assert len(entries) > 4900
    Chem = pytest.importorskip("rdkit.Chem")
    reasons = [mols.rejection(Chem.MolFromSmiles(s), RULE) for _, s in FIRST]
    assert reasons == [None, "fragments", None, "size", "size"]
    big = RULE._replace(max_atoms=16)
    assert mols.rejection(Chem.MolFromSmiles("CC1=CC=CC=C1C"), big) == "rigid"  # 8 atoms, 0 rot.
    assert mols.rejection(Chem.MolFromSmiles("CC(O)CCC1=CC=CC=C1"), big) == "stereo"
    assert mols.rejection(Chem.MolFromSmiles("C[C@H](O)CCC1=CC=CC=C1"), big) is None
    assert mols.rejection(Chem.MolFromSmiles("CCCCCC[N+](C)(C)C"), big) == "charged"
    assert mols.rejection(Chem.MolFromSmiles("CCCCCCCCBr"), big) == "elements"


def test_generation_is_deterministic_for_a_seed_and_skips_rejected():
    """Same seed: bit-identical sets; another seed (negative control): other coordinates."""
    a, stats = mols.generate(FIRST, RULE, molecules=2, conformers=4, seed=11)
    b, _ = mols.generate(FIRST, RULE, molecules=2, conformers=4, seed=11)
    c, _ = mols.generate(FIRST, RULE, molecules=2, conformers=4, seed=12)
    assert a.smiles == (FIRST[0][1], FIRST[2][1])
    assert stats["kept"] == 2 and stats["rejected"] == {"fragments": 1}
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.abs(a.coords - c.coords).max() > 0.1
    # shapes, padding, centring, symmetric bonds, heavy atoms only
    assert a.coords.shape == (2, 4, 12, 3) and a.mask.sum(1).tolist() == [10, 9]
    assert np.abs(a.coords[~np.broadcast_to(a.mask[:, None], a.coords.shape[:3])]).max() == 0
    assert np.abs(a.coords.sum(2)).max() < 1e-4
    assert np.all(a.bonds == a.bonds.transpose(0, 2, 1)) and not np.any(a.atomic_numbers == 1)
    with_h = mols.generate(FIRST, RULE._replace(hydrogens=True, max_atoms=24), 1, 2, seed=11)[0]
    Chem = pytest.importorskip("rdkit.Chem")
    mol = Chem.MolFromSmiles(FIRST[0][1])
    assert (with_h.atomic_numbers == 1).sum() == Chem.AddHs(mol).GetNumAtoms() - 10
    assert with_h.mask.sum() == Chem.AddHs(mol).GetNumAtoms()


def test_mmff_relaxation_changes_the_conformers():
    plain = mols.generate(FIRST, RULE, 1, 2, seed=3)[0]
    relaxed = mols.generate(FIRST, RULE, 1, 2, seed=3, mmff=True)[0]
    assert 1e-3 < np.abs(plain.coords - relaxed.coords).max() < 2.0


def test_cache_is_one_npz_keyed_by_settings_and_read_back(data_dir, monkeypatch):
    first = mols.cached_conformers(RULE, 2, 4, seed=5)
    files = sorted(data_dir.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind
    with monkeypatch.context() as patch:
        patch.setattr(mols, "generate", lambda *a, **k: pytest.fail("regenerated"))
        again = mols.cached_conformers(RULE, 2, 4, seed=5)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    mols.cached_conformers(RULE, 2, 4, seed=6)
    assert len(list(data_dir.iterdir())) == 2
    with np.load(files[0]) as f:
        assert "failed_embedding" in str(f["settings"])


def test_user_npz_round_trip_pads_and_is_used_by_the_source(tmp_path):
    cset, _ = mols.generate(FIRST, RULE, molecules=2, conformers=5, seed=1)
    # a user's file: 11 atom slots, not centred
    small = mols.ConformerSet(cset.smiles, cset.atomic_numbers[:, :11], cset.bonds[:, :11, :11],
                              cset.coords[:, :, :11] + 3.0, cset.mask[:, :11])
    path = mols.save_npz(tmp_path / "mine.npz", small)
    back = mols.load_npz(path)
    np.testing.assert_allclose(back.coords, cset.coords[:, :, :11], atol=1e-5)  # centred again
    args = src.load_args(_static(data_path=str(path)))
    assert args["coords_train"].shape == (2, 3, 12, 3)
    assert args["coords_test"].shape == (2, 2, 12, 3)
    assert src.decode_smiles(args["smiles"]) == list(cset.smiles)


def test_source_layout_round_robin_and_fixed_test_set():
    static = _static()
    source = src.conformer_source(static)
    args = source.load(static)
    real = [source.draw(jax.random.key(i), {}, args) for i in range(2)]
    m = args["atoms"].shape[0]
    for r in real:
        np.testing.assert_array_equal(r.train["mol"], np.arange(6) % m)
        np.testing.assert_array_equal(r.train["atoms"], args["atoms"][np.arange(6) % m])
        # each molecule's D0 conformers are distinct training conformers
        for mol in range(m):
            c = np.asarray(r.train["coords"])[np.arange(6) % m == mol]
            assert len({x.tobytes() for x in c}) == len(c)
            pool = {x.tobytes() for x in args["coords_train"][mol]}
            assert all(x.tobytes() in pool for x in c)
        test = np.asarray(r.test["coords"]).reshape(-1, m, 12, 3).transpose(1, 0, 2, 3)
        np.testing.assert_array_equal(test, args["coords_test"])
    d0 = [np.asarray(r.train["coords"]) for r in real]
    assert np.abs(d0[0] - d0[1]).max() > 0  # chains draw their own D0
    fresh = source.fresh(jax.random.key(3), {}, args, real[0], 5)
    np.testing.assert_array_equal(fresh["mol"], np.arange(5) % m)
    assert fresh["edges"].dtype == np.int8 and fresh["coords"].shape == (5, 12, 3)


@pytest.mark.parametrize("change,field", [
    ({"data_path": "/nonexistent/conformers.npz"}, "data_path"),
    ({"data_path": "/nonexistent/list.smi"}, "data_path"),
    ({"n_test": 5}, "n_test"),
    ({"n_test": 10}, "n_test"),
    ({"n0": 9}, "n0"),
    ({"d": 5}, "min_atoms"),
])
def test_bad_inputs_raise_one_line_config_errors(change, field):
    with pytest.raises(ConfigError) as e:
        src.load_args(_static(**change))
    assert field in str(e.value) and "\n" not in str(e.value)


def test_bad_user_files(tmp_path):
    smi = tmp_path / "list.smi"
    smi.write_text("CCC1=C(N)C=C(C)N=C1 first\nC1CC(\n")
    with pytest.raises(ConfigError, match="line 2: invalid SMILES"):
        src.load_args(_static(data_path=str(smi)))
    smi.write_text("CCC1=C(N)C=C(C)N=C1\n")
    with pytest.raises(ConfigError, match="options.molecules=2: only 1 molecules"):
        src.load_args(_static(data_path=str(smi)))
    smi.write_text("C1=CC=CC=C1\nCCCCCCCCBr\n")
    with pytest.raises(ConfigError, match="empty selection"):
        src.load_args(_static(data_path=str(smi)))
    cset, _ = mols.generate(FIRST, RULE, molecules=2, conformers=5, seed=1)
    broken = tmp_path / "broken.npz"
    np.savez(broken, coords=cset.coords, atomic_numbers=cset.atomic_numbers, mask=cset.mask)
    with pytest.raises(ConfigError, match=r"missing arrays \['bonds'\]"):
        src.load_args(_static(data_path=str(broken)))
    np.savez(broken, coords=cset.coords, atomic_numbers=cset.atomic_numbers,
             bonds=cset.bonds[:, :5], mask=cset.mask)
    with pytest.raises(ConfigError, match="bonds has shape"):
        src.load_args(_static(data_path=str(broken)))
    np.savez(broken, coords=cset.coords * np.nan, atomic_numbers=cset.atomic_numbers,
             bonds=cset.bonds, mask=cset.mask)
    with pytest.raises(ConfigError, match="finite"):
        src.load_args(_static(data_path=str(broken)))
    few = mols.save_npz(tmp_path / "few.npz", cset)
    with pytest.raises(ConfigError, match="options.conformers=8"):
        src.load_args(_static(data_path=str(few), options={"conformers": 8}))
    not_npz = tmp_path / "garbage.npz"
    not_npz.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable .npz"):
        src.load_args(_static(data_path=str(not_npz)))


@pytest.mark.parametrize("sets,field", [
    (["data_path=/nonexistent/conformers.npz"], "data_path"),
    (["n_test=5"], "n_test"),
    (["d=5"], "min_atoms"),
])
def test_cli_exits_2_with_one_line(tmp_path, capsys, sets, field):
    argv = ["run", "configs/diffusion_conformers.py", "--set", "options.molecules=2", "--set",
            "options.conformers=5", "--set", "n=6", "--set", "n0=6", "--set", "n_test=4",
            "--set", "d=12", "--set", "seeds=1", "--set", "generations=2"]
    for s in sets:
        argv += ["--set", s]
    code = cli.main([*argv, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and field in err, err


def test_sizes_are_checked_before_rdkit_runs(monkeypatch):
    """validate()'s model check refuses impossible sizes without generating anything."""
    from collapse_jax.models.conformer_diffusion import _check

    monkeypatch.setattr(mols, "generate", lambda *a, **k: pytest.fail("generated"))
    with pytest.raises(ConfigError, match="n0=99"):
        _check(_static(n0=99))
    with pytest.raises(ConfigError, match="eval_timesteps"):
        _check(dataclasses.replace(_static(), options=(("diffusion_steps", 4),
                                                       ("eval_timesteps", 10))))
