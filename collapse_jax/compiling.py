"""Compiling a sweep's programs once: in this process, and across processes without tracing.

``compile_jobs`` turns ``(jitted function, abstract arguments)`` pairs into executables:

- in this process, cached by the arguments' abstract signature (``_EXECUTABLES``), and by the
  lowered program's text (``_SAME_TEXT``: two groups whose programs lower to the same text, as
  the ``init`` of ``replace`` and ``accumulate`` on the Gaussian's statistics pool, share one
  executable instead of a second compile or cache load);
- across processes, first from the program store below, then (after tracing and lowering) from
  JAX's persistent compilation cache, then compiled by XLA; a group's programs compile at once
  on threads (XLA releases the GIL).

The program store. JAX's persistent compilation cache is keyed by the lowered program, so a
rerun with a warm cache still traces and lowers every program before it can look one up: 0.3-0.7 s
of Python for a chain program (the Gaussian config's 18 programs: about 5 s of its 16 s warm
run). The store keys a sweep's compiled program by what the program is built from instead:

- the recipe (``init`` / ``advance`` / ``snapshot`` with its loop length or sample count) and the
  ``StaticConfig``, whose model, source and regime must be collapse_jax's own (a family, source
  or regime registered from other code is never stored: its code is not in the fingerprint);
- the abstract arguments (structure, shapes, dtypes, shardings), the mesh's devices and the
  compiler options;
- a fingerprint of everything else a trace or a compile reads: the source of every module of
  the installed collapse_jax, the versions of Python and the libraries traced through
  (``results.versions``), the backend and its platform version, the device kind and count,
  ``XLA_FLAGS`` (and ``LIBTPU_INIT_ARGS``), the CPU's architecture and features, and every JAX
  configuration value (except the caches' and logging's own).

A hit loads the executable (``jax.experimental.serialize_executable``; 0.05-0.15 s on CPU), the
machine code XLA compiled for that program; a miss traces, lowers and compiles as before and
stores what XLA compiled. The store is a folder ``collapse_jax-programs`` in JAX's compilation
cache directory, so it is on exactly when that cache is (``programs.enable_compilation_cache``;
``COLLAPSE_JAX_CACHE_DIR=off`` turns both off), never in a multi-process run, and written
atomically; ``COLLAPSE_JAX_PROGRAM_STORE=off`` turns the store alone off. Like JAX's cache it
holds trusted code: keep it private. Each lookup records a ``jax.monitoring`` event (``HIT`` or
``MISS``). It holds at most ``MAX_STORE_BYTES`` (2 GiB), dropping the least recently used
programs first. A program JAX's cache served is not stored (see ``_compile_fresh``; the chain
programs are named after the code, ``named``, so after a change of the code XLA compiles them
afresh), so a store emptied by hand beside a full JAX cache refills only as programs are
compiled again.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import os
import pickle
import platform
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
from jax.experimental import serialize_executable

from collapse_jax import results
from collapse_jax.config import StaticConfig
from collapse_jax.files import atomic_path
from collapse_jax.model import MODELS, SOURCES
from collapse_jax.plan import abstract_signature
from collapse_jax.regimes import REGIMES

log = logging.getLogger(__name__)

#: ``jax.monitoring`` events recorded for each program looked up in the store.
HIT, MISS = "/collapse_jax/program_store/hits", "/collapse_jax/program_store/misses"

#: Folder of the store inside JAX's compilation cache directory.
FOLDER = "collapse_jax-programs"

#: JAX configuration values left out of the fingerprint: where caches live and what is logged
#: change no program.
_IGNORED_CONFIG = ("cache", "log", "dump", "pprint", "traceback")


#: Compiled executables kept (least recently used dropped first). Each one holds its machine code
#: in memory maps (on CPU a few per kernel: a chain program maps ~200), and a process may hold
#: at most ``vm.max_map_count`` (65,530 by default on Linux) maps in all: an unbounded cache ran a
#: long process out of them ("LLVM compilation error: Cannot allocate memory").
MAX_EXECUTABLES = 32

_EXECUTABLES: collections.OrderedDict[Any, Any] = collections.OrderedDict()

#: sha256 of a lowered program's text, trees and options -> (executable, compiled by XLA here).
_SAME_TEXT: collections.OrderedDict[str, tuple[Any, bool]] = collections.OrderedDict()

#: XLA compiler options of each ``Experiment.compile`` mode: ``fast`` compiles at LLVM
#: optimisation level 0 (2-3x faster on CPU for a chain program; the code may run slower).
COMPILER_OPTIONS: dict[str, dict[str, Any] | None] = {
    "optimized": None, "fast": {"xla_backend_optimization_level": 0}}


def compile_jobs(jobs: list[tuple[Callable, tuple]], mode: str = "optimized",
                 recipes: list[tuple] | None = None, static: StaticConfig | None = None,
                 devices: Sequence[Any] = ()) -> list[Any]:
    """``fn.lower(*example).compile()`` of each ``(fn, example)`` with ``mode``'s options.

    Cached in this process by the abstract signature of ``example`` and the mode, then by the
    lowered text. With ``recipes`` (one per job: what the program is built from besides
    ``static``, its arguments and ``devices``, e.g. ``("advance", impl, length)``) each program
    is first looked up in the program store (no trace, no lowering on a hit; a group's programs
    load at once on threads) and stored there once compiled. The programs left are lowered one
    after another (Python, under the GIL) and compiled at once on threads: a group's init and
    advance programs take the time of the longer one on two free cores, not their sum."""
    options = COMPILER_OPTIONS[mode]
    sigs = [(fn, abstract_signature(example, sharding=True), mode) for fn, example in jobs]
    keys = {sig: program_key(recipe, static, sig[1], devices, options)
            for sig, recipe in zip(sigs, recipes or [None] * len(jobs), strict=True)
            if recipe is not None and sig not in _EXECUTABLES}
    keys = {sig: key for sig, key in keys.items() if key is not None}
    loaded = _on_threads(lambda sig: load(keys[sig], devices), list(keys))
    done = {sig: hit for sig, hit in zip(keys, loaded, strict=True) if hit is not None}
    lowered = {sig: fn.lower(*example) for sig, (fn, example) in zip(sigs, jobs, strict=True)
               if sig not in _EXECUTABLES and sig not in done}
    texts = {sig: hashlib.sha256(repr((low.as_text(), low.in_tree, low.out_tree, options,
                                       [d.id for d in devices])).encode()).hexdigest()
             for sig, low in lowered.items()}
    todo = [sig for sig in lowered if texts[sig] not in _SAME_TEXT]
    built = _on_threads(lambda sig: _compile_fresh(lowered[sig], options), todo)
    _SAME_TEXT.update(zip((texts[sig] for sig in todo), built, strict=True))
    for sig in lowered:
        done[sig], fresh = _SAME_TEXT[texts[sig]]
        _SAME_TEXT.move_to_end(texts[sig])
        if fresh and keys.get(sig) is not None:
            save(keys[sig], done[sig])
    out = [done[sig] if sig in done else _EXECUTABLES[sig] for sig in sigs]
    for sig, executable in zip(sigs, out, strict=True):
        _EXECUTABLES[sig] = executable
        _EXECUTABLES.move_to_end(sig)
    for cache in (_EXECUTABLES, _SAME_TEXT):
        while len(cache) > MAX_EXECUTABLES:
            cache.popitem(last=False)
    return out


def _on_threads(fn: Callable, items: list) -> list:
    """``[fn(x) for x in items]``, at once on threads when there are several (XLA's compiles
    and loads release the GIL: two programs take the longer one's time on two free cores)."""
    if len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(len(items), "collapse-jax-compile") as pool:
        return list(pool.map(fn, items))


def clear() -> None:
    """Forget the executables this process holds (``programs.clear_caches``)."""
    _EXECUTABLES.clear()
    _SAME_TEXT.clear()


# The program store


@functools.cache
def _code_digest() -> str:
    """SHA-256 of every ``.py`` file of the imported collapse_jax package (path and bytes)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def named(fn: Callable, role: str) -> Callable:
    """``fn`` renamed ``{role}_{code digest}``: the name of the program JAX lowers it to
    (``jit_advance_1a2b...``), which JAX's persistent cache keys it by. So JAX's cache serves a
    chain program only to the collapse_jax code that compiled it, and after any change of the
    code XLA compiles the program afresh, which the store can then keep (a program JAX's cache
    served cannot be stored, see ``_compile_fresh``; otherwise a store whose programs were all
    in JAX's cache under older code would never fill)."""
    fn.__name__ = fn.__qualname__ = f"{role}_{_code_digest()[:12]}"
    return fn


@functools.cache
def _cpu_features() -> str:
    """The host CPU's architecture and (on Linux) its feature flags: an executable compiled for
    one CPU must not be loaded on another sharing the cache directory."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{platform.machine()} {flags.strip()}"


@functools.cache
def _versions() -> str:
    """Python's, collapse_jax's and the traced libraries' versions, and the devices
    (``results.versions``, what ``config.json`` records)."""
    return repr(results.versions())


def fingerprint() -> str:
    """What every stored program depends on besides its recipe and arguments (see the module
    docstring). Computed per lookup: JAX's configuration can change within a process."""
    device = jax.devices()[0]
    config = sorted((k, repr(v)) for k, v in jax.config.values.items()
                    if not any(word in k for word in _IGNORED_CONFIG))
    parts = (_code_digest(), _versions(),
             device.client.platform, device.client.platform_version, device.device_kind,
             os.environ.get("XLA_FLAGS", ""),
             os.environ.get("LIBTPU_INIT_ARGS", ""), _cpu_features(), config)
    return repr(parts)


def _own(static: StaticConfig) -> bool:
    """Whether the model, source and regime ``static`` names are collapse_jax's own code."""
    spec = MODELS.get(static.model)
    if spec is None:
        return False
    factories = (spec.factory, SOURCES.get(static.source or spec.source),
                 REGIMES.get(static.regime))
    return all(f is not None and getattr(f, "__module__", "").split(".")[0] == "collapse_jax"
               for f in factories)


#: Environment variable: ``off`` turns the program store off (JAX's cache stays on), e.g. for a
#: session that changes collapse_jax's functions at run time (monkeypatching), which the
#: fingerprint of the code on disk does not see.
ENV_STORE = "COLLAPSE_JAX_PROGRAM_STORE"


def directory() -> Path | None:
    """The store's folder, or None when there is none (no local JAX cache directory, a
    multi-process run, or ``COLLAPSE_JAX_PROGRAM_STORE=off``)."""
    cache = jax.config.jax_compilation_cache_dir
    off = os.environ.get(ENV_STORE, "").strip().lower() in ("off", "0", "no", "false")
    if off or not cache or "://" in str(cache) or jax.process_count() > 1:
        return None
    return Path(cache) / FOLDER


def program_key(recipe: tuple, static: StaticConfig, signature: Any, devices: Sequence[Any],
                options: Any) -> str | None:
    """The file name a program is stored under, or None when it is not to be stored."""
    if directory() is None or not _own(static):
        return None
    text = repr((recipe, static, signature, [d.id for d in devices], options, fingerprint()))
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def _prepare_custom_calls() -> None:
    """Load what the programs' custom calls need before running an executable nothing in this
    process has lowered: jaxlib sets the LAPACK function pointers of its CPU kernels (eigh,
    Cholesky, QR...) when it first lowers a linear-algebra operation, so a loaded chain program
    calling ``syevd`` before any such lowering jumped to a null pointer (a segfault). Lowering
    one tiny ``eigh`` (nothing is compiled) sets them all, as JAX does before running an
    exported program."""
    jax.jit(jax.numpy.linalg.eigh).lower(jax.ShapeDtypeStruct((2, 2), "float32"))


def load(key: str, devices: Sequence[Any]) -> Any | None:
    """The stored program ``key`` loaded onto ``devices``, or None (recording ``HIT`` or
    ``MISS``). A file that does not load (truncated, from another build) counts as a miss and is
    removed; the program is stored again when XLA next compiles it."""
    path = directory() / f"{key}.bin"
    _prepare_custom_calls()
    try:
        payload, in_tree, out_tree = pickle.loads(path.read_bytes())
        compiled = serialize_executable.deserialize_and_load(
            payload, in_tree, out_tree, execution_devices=list(devices))
        os.utime(path)  # recently used: kept longest (``_prune``)
    except FileNotFoundError:
        compiled = None
    except Exception as e:  # noqa: BLE001 - any unreadable entry is a miss, not an error
        log.warning("collapse_jax program store: %s does not load (%s); removed, compiling",
                    path.name, type(e).__name__)
        path.unlink(missing_ok=True)
        compiled = None
    jax.monitoring.record_event(MISS if compiled is None else HIT)
    return compiled


class _Served(threading.local):
    """Programs JAX's persistent cache served in this thread (``jax.monitoring`` listener)."""

    hits = 0


_SERVED = _Served()


def _count_cache_hits(event: str, **kwargs: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _SERVED.hits += 1


jax.monitoring.register_event_listener(_count_cache_hits)


def _compile_fresh(lowered: Any, options: Any) -> tuple[Any, bool]:
    """``lowered.compile(options)`` and whether XLA compiled it (False: JAX's persistent cache
    served it). Only what XLA compiled is stored: with jaxlib 0.10.2 on CPU an executable loaded
    from JAX's cache serializes without part of its code (a third smaller), and running it from
    the store failed ("Function slice_bitcast_fusion.1 not found"). The compile runs in the
    calling thread, where JAX records the cache hit."""
    before = _SERVED.hits
    compiled = lowered.compile(options)
    return compiled, _SERVED.hits == before


def save(key: str, compiled: Any) -> None:
    """Store ``compiled`` under ``key`` (atomically; a program that cannot be serialized is
    skipped)."""
    try:
        blob = pickle.dumps(serialize_executable.serialize(compiled))
    except Exception as e:  # noqa: BLE001 - e.g. a backend without serialization
        log.debug("collapse_jax program store: not stored (%s)", e)
        return
    with atomic_path(directory() / f"{key}.bin") as tmp:
        tmp.write_bytes(blob)
    _prune(directory(), MAX_STORE_BYTES)


#: Bytes the store may hold; past them the least recently used programs are removed (each
#: change of collapse_jax's code starts a new set: a chain program is 0.3-1.5 MB on CPU).
MAX_STORE_BYTES = 2 * 2**30


def _prune(folder: Path, limit: int) -> None:
    """Remove the least recently used (oldest modified: a load touches its file) programs of
    ``folder`` until it holds at most ``limit`` bytes."""
    entries = []
    for path in folder.glob("*.bin"):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total -= size
