"""Real molecules and their conformer ensembles, offline: RDKit's NCI set, ETKDG, one cached .npz.

Molecules come from RDKit's own ``Data/NCI/first_5K.smi`` (5,000 NCI compounds that ship in the
``rdkit`` wheel; found through ``RDConfig.RDDataDir``) or from a user's SMILES file (one SMILES per
line, an optional name after whitespace). They are read in file order and the first ``molecules``
that pass the **selection rule** (``SelectionRule``) and embed are kept:

- the SMILES parses and sanitises (unparsable entries of RDKit's file are skipped and counted; in
  a user's file they are an error naming the line);
- one connected fragment, no formal charges, no radicals;
- only the allowed elements (default C, N, O, F, S, Cl: no metals, no P, Br, I);
- ``min_atoms <= atoms <= max_atoms``, counting heavy atoms (or all atoms with ``hydrogens``);
- at least ``min_rotatable`` rotatable bonds (RDKit's ``CalcNumRotatableBonds``), so the ensemble
  is not a single rigid shape;
- no unspecified stereo element (``FindPotentialStereo``): ETKDG would otherwise mix
  stereoisomers, which no alignment superposes.

Each kept molecule gets ``conformers`` conformers from RDKit's ETKDG v3 (hydrogens added for the
embedding, ``randomSeed = seed + file line``, one thread, no pruning: deterministic for a seed),
optionally relaxed with MMFF94; a molecule for which fewer than ``conformers`` embed is skipped
and counted in the log. Coordinates are centred per conformer (heavy-atom centroid, or all atoms
with ``hydrogens``) and padded to ``max_atoms`` with a mask.

The result is a ``ConformerSet`` cached as ONE compressed ``.npz`` under
``$COLLAPSE_JAX_DATA_DIR`` (default ``~/.cache/collapse_jax/data``), named by a hash of every
setting and written atomically. The same format (``NPZ_KEYS``) is how a user supplies conformers
(e.g. converted from GEOM) through ``data_path``: ``coords [M, C, A, 3]`` float (Angstrom),
``atomic_numbers [M, A]`` int (0 = padding), ``bonds [M, A, A]`` int (``BOND_TYPES``), ``mask
[M, A]`` bool, ``smiles [M]`` str (optional).

References:
    Riniker & Landrum 2015, "Better Informed Distance Geometry: Using What We Know To Improve
        Conformation Generation", J. Chem. Inf. Model. 55 (ETKDG).
    Wang, Witek, Landrum & Riniker 2020, "Improving Conformer Generation for Small Rings and
        Macrocycles Based on Distance Geometry and Experimental Torsional-Angle Preferences",
        J. Chem. Inf. Model. 60 (ETKDG v3).
    Halgren 1996, "Merck Molecular Force Field. I.", J. Comput. Chem. 17 (MMFF94).
    Xu et al. 2022, "GeoDiff: a Geometric Diffusion Model for Molecular Conformation
        Generation", ICLR, arXiv:2203.02923 (GEOM-Drugs conformer sets).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from collapse_jax.config import ConfigError

log = logging.getLogger(__name__)

#: Bond type codes of ``ConformerSet.bonds``: 0 none, 1 single, 2 double, 3 triple, 4 aromatic.
BOND_TYPES = ("none", "single", "double", "triple", "aromatic")
#: Keys of the conformer ``.npz`` format (``smiles`` is optional in a user's file).
NPZ_KEYS = ("coords", "atomic_numbers", "bonds", "mask")
#: Bumped whenever generation changes, so stale cache files are not reused.
FORMAT_VERSION = 1
_SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "P": 15, "S": 16, "Cl": 17, "Br": 35, "I": 53}


class SelectionRule(NamedTuple):
    """Which molecules of a SMILES list are used (see the module docstring).

    Attributes:
        min_atoms: fewest atoms (heavy atoms, or all atoms with ``hydrogens``).
        max_atoms: most atoms; also the padded atom count ``A`` (the engine's ``d``).
        elements: allowed element symbols.
        min_rotatable: fewest rotatable bonds.
        hydrogens: model explicit hydrogens (else heavy atoms only).
    """

    min_atoms: int = 8
    max_atoms: int = 16
    elements: tuple[str, ...] = ("C", "N", "O", "F", "S", "Cl")
    min_rotatable: int = 1
    hydrogens: bool = False


class ConformerSet(NamedTuple):
    """Conformer ensembles of ``M`` molecules, padded to ``A`` atoms (host numpy).

    Attributes:
        smiles: ``M`` SMILES strings.
        atomic_numbers: ``[M, A]`` int32, 0 on padding.
        bonds: ``[M, A, A]`` int8 symmetric bond type codes (``BOND_TYPES``).
        coords: ``[M, C, A, 3]`` float32 Angstrom, centred per conformer, 0 on padding.
        mask: ``[M, A]`` bool, which atom slots are real.
    """

    smiles: tuple[str, ...]
    atomic_numbers: np.ndarray
    bonds: np.ndarray
    coords: np.ndarray
    mask: np.ndarray


def nci_smiles_path() -> Path:
    """RDKit's shipped ``Data/NCI/first_5K.smi`` (5,000 NCI compounds)."""
    return Path(_rdkit().RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def data_dir() -> Path:
    """``$COLLAPSE_JAX_DATA_DIR``, default ``~/.cache/collapse_jax/data``."""
    env = os.environ.get("COLLAPSE_JAX_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "collapse_jax" / "data"


def _rdkit():
    try:  # optional: the [molecules] extra
        import rdkit
        from rdkit import Chem, RDConfig, RDLogger  # noqa: F401
        from rdkit.Chem import AllChem, rdMolDescriptors  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("source='conformers' needs RDKit to generate conformers: "
                          "pip install 'collapse_jax[molecules]' (or give data_path=<.npz>)") from e
    RDLogger.DisableLog("rdApp.*")  # RDKit prints parse errors itself; we count them instead
    return rdkit


def read_smiles(path: str | os.PathLike) -> list[tuple[int, str]]:
    """``(line number, SMILES)`` of every non-empty, non-comment line of a SMILES file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data_path={str(path)!r}: no such file")
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, start=1):
            parts = line.split()
            if parts and not parts[0].startswith("#"):
                out.append((i, parts[0]))
    return out


def rejection(mol, rule: SelectionRule) -> str | None:
    """Why ``mol`` (an RDKit Mol) fails ``rule``, or None when it passes."""
    rdkit = _rdkit()
    Chem, rdMD = rdkit.Chem, rdkit.Chem.rdMolDescriptors
    if len(Chem.GetMolFrags(mol)) != 1:
        return "fragments"
    allowed = {_SYMBOLS[e] for e in rule.elements} | {1}
    if any(a.GetAtomicNum() not in allowed for a in mol.GetAtoms()):
        return "elements"
    if any(a.GetFormalCharge() or a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return "charged"
    n = mol.GetNumHeavyAtoms() + (sum(a.GetTotalNumHs() for a in mol.GetAtoms())
                                  if rule.hydrogens else 0)
    if not rule.min_atoms <= n <= rule.max_atoms:
        return "size"
    if rdMD.CalcNumRotatableBonds(mol) < rule.min_rotatable:
        return "rigid"
    if any(s.specified == Chem.StereoSpecified.Unspecified for s in Chem.FindPotentialStereo(mol)):
        return "stereo"
    return None


def embed(smiles: str, conformers: int, seed: int, hydrogens: bool = False,
          mmff: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """ETKDG v3 conformers of one molecule (deterministic for ``seed``), or None if fewer embed.

    Returns:
        ``(coords [C, n, 3] float64 centred, atomic numbers [n], bonds [n, n] int8)`` of the
        ``n`` modelled atoms (heavy atoms first, in SMILES order; hydrogens after them if kept).
    """
    rdkit = _rdkit()
    Chem, AllChem = rdkit.Chem, rdkit.Chem.AllChem
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))  # AddHs appends H's after the heavy atoms
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    cids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(conformers), params=params))
    if len(cids) < conformers:
        return None
    if mmff:
        AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=1000)
    n = mol.GetNumAtoms() if hydrogens else mol.GetNumHeavyAtoms()
    xyz = np.stack([mol.GetConformer(c).GetPositions()[:n] for c in cids])
    xyz = xyz - xyz.mean(axis=1, keepdims=True)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()][:n], np.int32)
    codes = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3,
             Chem.BondType.AROMATIC: 4}
    bonds = np.zeros((n, n), np.int8)
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        if i < n and j < n:
            bonds[i, j] = bonds[j, i] = codes.get(b.GetBondType(), 1)
    return xyz, z, bonds


def generate(entries: list[tuple[int, str]], rule: SelectionRule, molecules: int,
             conformers: int, seed: int = 42, mmff: bool = False, strict: bool = False,
             field: str = "data_path") -> tuple[ConformerSet, dict]:
    """The first ``molecules`` entries that pass ``rule`` and embed, with their conformers.

    Args:
        entries: ``(line, SMILES)`` pairs in file order.
        rule: the selection rule (``max_atoms`` is the padded atom count).
        molecules: how many molecules to keep.
        conformers: conformers per molecule.
        seed: ETKDG seed; molecule on line ``l`` uses ``seed + l``.
        mmff: relax every conformer with MMFF94.
        strict: an unparsable SMILES raises ``ConfigError`` naming ``field`` and the line (a
            user's file) instead of being skipped and counted (RDKit's own file).

    Returns:
        The set and counts: ``{"read", "kept", "failed_embedding", "rejected": {reason: k}}``.
    """
    Chem = _rdkit().Chem
    a = rule.max_atoms
    kept, rejected, failed = [], Counter(), 0
    for line, smi in entries:
        if len(kept) == molecules:
            break
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            if strict:
                raise ConfigError(f"{field}: line {line}: invalid SMILES {smi!r}")
            rejected["unparsable"] += 1
            continue
        reason = rejection(mol, rule)
        if reason is not None:
            rejected[reason] += 1
            continue
        out = embed(smi, conformers, seed + line, rule.hydrogens, mmff)
        if out is None:
            failed += 1
            log.info("conformers: %s (line %d) embedded fewer than %d conformers; skipped",
                     smi, line, conformers)
            continue
        kept.append((smi, *out))
    stats = {"read": len(entries), "kept": len(kept), "failed_embedding": failed,
             "rejected": dict(sorted(rejected.items()))}
    if failed:
        log.warning("conformers: %d molecules failed to embed %d conformers and were skipped",
                    failed, conformers)
    m = len(kept)
    cset = ConformerSet(
        tuple(k[0] for k in kept),
        np.zeros((m, a), np.int32), np.zeros((m, a, a), np.int8),
        np.zeros((m, conformers, a, 3), np.float32), np.zeros((m, a), bool))
    for i, (_, xyz, z, bonds) in enumerate(kept):
        n = z.shape[0]
        cset.atomic_numbers[i, :n] = z
        cset.bonds[i, :n, :n] = bonds
        cset.coords[i, :, :n] = xyz.astype(np.float32)
        cset.mask[i, :n] = True
    return cset, stats


# ----------------------------------------------------------------------------------------------
# The .npz format: write (atomic), read (validated), cache


def save_npz(path: str | os.PathLike, cset: ConformerSet, **extra: np.ndarray) -> Path:
    """Write ``cset`` (and ``extra`` arrays) as one compressed ``.npz``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, smiles=np.asarray(cset.smiles, dtype=np.str_),
                                atomic_numbers=cset.atomic_numbers, bonds=cset.bonds,
                                coords=cset.coords, mask=cset.mask, **extra)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_npz(path: str | os.PathLike, field: str = "data_path") -> ConformerSet:
    """Read and validate a conformer ``.npz`` (``NPZ_KEYS``); errors name ``field`` and the key."""
    path = Path(path)
    where = f"{field}={str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{where}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            raw = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise ConfigError(f"{where}: not a readable .npz ({type(e).__name__}: {e})") from e
    missing = [k for k in NPZ_KEYS if k not in raw]
    if missing:
        raise ConfigError(f"{where}: missing arrays {missing}; a conformer file holds "
                          f"{list(NPZ_KEYS)} (+ optional 'smiles')")
    coords, z, bonds, mask = (raw[k] for k in NPZ_KEYS)
    if coords.ndim != 4 or coords.shape[-1] != 3 or coords.shape[0] < 1 or coords.shape[1] < 1:
        raise ConfigError(f"{where}: coords has shape {coords.shape}; expected [M, C, A, 3] "
                          f"with M, C >= 1")
    m, _, a, _ = coords.shape
    for key, arr, shape in (("atomic_numbers", z, (m, a)), ("bonds", bonds, (m, a, a)),
                            ("mask", mask, (m, a))):
        if arr.shape != shape:
            raise ConfigError(f"{where}: {key} has shape {arr.shape}; expected {list(shape)} "
                              f"to match coords {list(coords.shape)}")
    if not np.issubdtype(coords.dtype, np.floating) or not np.all(np.isfinite(coords)):
        raise ConfigError(f"{where}: coords must be finite floats (Angstrom)")
    if not (np.issubdtype(z.dtype, np.integer) and np.issubdtype(bonds.dtype, np.integer)):
        raise ConfigError(f"{where}: atomic_numbers and bonds must be integer arrays")
    mask = mask.astype(bool)
    if np.any(mask & (z <= 0)) or np.any(~mask & (z != 0)):
        raise ConfigError(f"{where}: atomic_numbers must be > 0 exactly where mask is True")
    if np.any(mask.sum(axis=1) < 2):
        raise ConfigError(f"{where}: every molecule needs at least 2 atoms in mask")
    if (np.any(bonds < 0) or np.any(bonds >= len(BOND_TYPES))
            or np.any(bonds != np.swapaxes(bonds, 1, 2))):
        raise ConfigError(f"{where}: bonds must be symmetric codes in 0..{len(BOND_TYPES) - 1} "
                          f"({', '.join(BOND_TYPES)})")
    pair = mask[:, :, None] & mask[:, None, :]
    if np.any((bonds != 0) & ~pair):
        raise ConfigError(f"{where}: bonds must be 0 on padded atoms")
    smiles = raw.get("smiles", np.array([f"molecule {i}" for i in range(m)]))
    if smiles.shape != (m,):
        raise ConfigError(f"{where}: smiles has shape {smiles.shape}; expected [{m}]")
    # Centre every conformer on its real atoms (a user's file need not be centred; files
    # centred already, like the cache, are read back bit for bit).
    w = mask[:, None, :, None].astype(np.float64)
    c = coords.astype(np.float64) * w
    centre = c.sum(axis=2, keepdims=True) / w.sum(axis=2, keepdims=True)
    if np.abs(centre).max() > 1e-4 or np.any(np.where(w == 0, coords, 0) != 0):
        coords = ((c - centre) * w).astype(np.float32)
    coords = coords.astype(np.float32)
    return ConformerSet(tuple(str(s) for s in smiles), z.astype(np.int32), bonds.astype(np.int8),
                        coords, mask)


def cache_key(settings: dict) -> str:
    """A short hash of the settings (and the RDKit version and format version)."""
    blob = json.dumps({**settings, "format": FORMAT_VERSION,
                       "rdkit": _rdkit().__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cached_conformers(rule: SelectionRule, molecules: int, conformers: int, seed: int = 42,
                      mmff: bool = False, smiles_file: str = "") -> ConformerSet:
    """``generate`` from RDKit's NCI file (or ``smiles_file``), cached as one ``.npz``.

    The cache file ``conformers-<hash>.npz`` in ``data_dir()`` is keyed by every setting (and the
    SMILES file's content); a second call with the same settings only reads it.
    """
    path = Path(smiles_file) if smiles_file else nci_smiles_path()
    entries = read_smiles(path)  # a missing user file raises before anything else
    settings = {"rule": rule._asdict(), "molecules": molecules, "conformers": conformers,
                "seed": seed, "mmff": mmff, "smiles": _file_digest(path)}
    file = data_dir() / f"conformers-{cache_key(settings)}.npz"
    if file.is_file():
        return load_npz(file, field="cache file")
    cset, stats = generate(entries, rule, molecules, conformers, seed, mmff,
                           strict=bool(smiles_file))
    source = f"data_path={smiles_file!r}" if smiles_file else f"RDKit's {path.name}"
    if not cset.smiles:
        raise ConfigError(
            f"options: empty selection: no molecule of {source} passes the selection rule "
            f"({rule.min_atoms} <= atoms <= d={rule.max_atoms}, elements {list(rule.elements)}, "
            f">= {rule.min_rotatable} rotatable bond, no unspecified stereo; rejected: "
            f"{stats['rejected']}, failed to embed: {stats['failed_embedding']})")
    if len(cset.smiles) < molecules:
        raise ConfigError(
            f"options.molecules={molecules}: only {len(cset.smiles)} molecules of {source} pass "
            f"the selection rule with d={rule.max_atoms} and embed {conformers} conformers; use "
            f"molecules <= {len(cset.smiles)} or a larger d")
    log.info("conformers: %s; cached in %s", stats, file)
    save_npz(file, cset, settings=np.asarray(json.dumps({**settings, "stats": stats})))
    return cset
