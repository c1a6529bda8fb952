"""The sweep (``collapse_jax.sweep``): the same chains give bit-identical metrics however they are
batched (chain chunks, generation chunks, permuted ids) and on one or eight (fake CPU) devices;
time-sized generation chunks start with one generation, then follow the measured rate, and slow
host work does not shrink them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from conftest import child_env

import collapse_jax as cj
from collapse_jax.config import ConfigError
from collapse_jax.mesh import make_mesh
from collapse_jax.plan import plan_sweep
from collapse_jax.sweep import prepare_sweep, run_sweep, sweep_chunks

# (model, regime, n, d): bit-identical on 8 devices (2 chains each) and 1 device (11 in a batch)
BITWISE = [("gaussian", "accumulate_subsample", 6, 2), ("linear_regression", "accumulate", 8, 3),
           ("gaussian", "replace", 6, 2), ("gaussian", "accumulate", 6, 2),
           ("linear_regression", "replace", 8, 3),
           ("categorical", "replace", 8, 5), ("categorical", "accumulate", 8, 5)]
# bit-identical on any number of devices at the same number of chains per device (XLA CPU's
# exp/log depend on the batch size: see test_kde_and_gmm_agree_bitwise_on_...)
SAME_BATCH = [("kde", "replace", 6, 2), ("kde", "accumulate", 6, 2),
              ("gmm", "replace", 8, 2), ("gmm", "accumulate", 8, 2)]


def _static(model, regime, n, d, generations=6):
    return cj.StaticConfig(model=model, regime=regime, n0=n, n=n, d=d,
                           generations=generations, n_test=8)


def _hp(model, num):
    return {k: np.linspace(v, 2 * v, num, dtype=np.float32)
            for k, v in cj.MODELS[model].hparams.items()}


@pytest.mark.parametrize("model,regime,n,d", [
    ("gaussian", "accumulate_subsample", 6, 2),
    ("linear_regression", "accumulate", 8, 3),
])
def test_chunked_sweep_equals_unchunked_bitwise(model, regime, n, d):
    static = cj.StaticConfig(model=model, regime=regime, n0=n, n=n, d=d, generations=5,
                             n_test=8)
    ids = np.arange(7)
    hp = {k: np.linspace(v, 2 * v, 7, dtype=np.float32)
          for k, v in cj.MODELS[model].hparams.items()}
    root = jax.random.key(11)
    whole = run_sweep(static, root, ids, hp, {}, chunk_size=7)
    chunked = run_sweep(static, root, ids, hp, {}, chunk_size=3)  # 3 + 3 + 1 (padded)
    again = run_sweep(static, root, ids, hp, {}, chunk_size=7)
    for k in whole.metrics:
        np.testing.assert_array_equal(whole.metrics[k], chunked.metrics[k], err_msg=k)
        np.testing.assert_array_equal(whole.metrics[k], again.metrics[k], err_msg=k)
    # a chain's numbers depend on its id, not its position in the batch
    perm = np.array([6, 0, 5, 1, 4, 2, 3])
    shuffled = run_sweep(static, root, ids[perm], {k: v[perm] for k, v in hp.items()}, {},
                         chunk_size=7)
    for k in whole.metrics:
        np.testing.assert_array_equal(whole.metrics[k][perm], shuffled.metrics[k], err_msg=k)


@pytest.mark.parametrize("model,regime,n,d,runs", [
    (*BITWISE[0], [(5, 1), (2, 2)]),  # 1 = every generation; 2 leaves a tail (G - 1 = 5)
    (*BITWISE[1], [(2, 3)]),
])
def test_generation_chunks_equal_one_chunk_bitwise(model, regime, n, d, runs):
    static, ids, root = _static(model, regime, n, d), np.arange(5), jax.random.key(4)
    whole = run_sweep(static, root, ids, _hp(model, 5), {}, chunk_size=5, generation_chunk=5)
    for chunk, gens in runs:
        r = run_sweep(static, root, ids, _hp(model, 5), {}, chunk_size=chunk,
                      generation_chunk=gens)
        assert r.generation_chunk == gens
        for k in whole.metrics:
            np.testing.assert_array_equal(whole.metrics[k], r.metrics[k], err_msg=f"{k} {gens}")


def _observed(static, root, ids, hp, on_chunk, **plan_kw):
    """``run_sweep``'s metrics, with ``on_chunk`` called on every chunk ``sweep_chunks`` yields
    (one chain chunk)."""
    mesh = make_mesh()
    plan = plan_sweep(static, {}, len(ids), devices=mesh.devices.size, **plan_kw)
    setup = prepare_sweep(static, root, ids, hp, {}, plan=plan, mesh=mesh)
    parts = []
    for out in sweep_chunks(setup):
        on_chunk(out)
        parts.append(out.metrics)
    return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}


def test_time_sized_chunks_first_one_generation_then_by_measured_rate(monkeypatch):
    from collapse_jax import plan as planmod
    from collapse_jax import sweep

    static, ids, root = _static(*BITWISE[0][:4], generations=12), np.arange(4), jax.random.key(4)
    plan = plan_sweep(static, {}, 4, devices=1)
    assert plan.chunk_seconds == planmod.CHUNK_SECONDS and plan.generation_chunk == 11
    sizer = sweep._ChunkSizer(plan)
    assert sizer.length() == 1
    sizer.record(1, 0.5, init=False)  # 0.5 s per generation -> CHUNK_SECONDS / 0.5
    assert sizer.length() == int(planmod.CHUNK_SECONDS / 0.5)
    sizer.record(4, 1e-4, init=False)
    assert sizer.length() == 11  # at most the compiled scan length
    sizer.record(1, 100.0, init=False)
    assert sizer.length() == 1
    fixed = sweep._ChunkSizer(plan._replace(chunk_seconds=0.0, generation_chunk=3))
    assert fixed.length() == 3
    # the device was idle before the host work ended: the wait is only an upper bound, so the
    # next call runs at least twice as many generations (not the host's pace)
    sizer = sweep._ChunkSizer(plan._replace(chunk_seconds=2.0))
    sizer.record(1, 1.9, init=False, host=0.05, exact=False)
    assert sizer.length() == 2
    sizer.record(2, 1.9, init=False, host=0.05, exact=False)
    assert sizer.length() == 4
    sizer.record(2, 1.9, init=False, host=0.05, exact=True)  # measured: 2 s / 0.95 s
    assert sizer.length() == 2
    # slow host work (results part + checkpoint) stretches the target to host / HOST_SHARE
    sizer.record(1, 0.1, init=False, host=0.5, exact=True)
    assert sizer.length() == min(int(0.5 / sweep.HOST_SHARE / 0.1), 11) == 11
    sizer.record(1, 1.0, init=False, host=0.25, exact=True)
    assert sizer.length() == int(0.25 / sweep.HOST_SHARE / 1.0) == 5
    # end to end on a fake clock where every perf_counter call advances 0.05 s: one generation,
    # then at least CHUNK_SECONDS / 0.15 = 13 generations, capped by the 10 that are left
    spans = []
    whole = run_sweep(static, root, ids, _hp("gaussian", 4), {}, generation_chunk=11)
    monkeypatch.setattr(planmod, "CHUNK_SECONDS", 2.0)
    clock = iter(np.arange(0.0, 1000.0, 0.05))
    monkeypatch.setattr(sweep.time, "perf_counter", lambda: float(next(clock)))
    metrics = _observed(static, root, ids, _hp("gaussian", 4),
                        lambda out: spans.append((out.gen_start, out.gen_stop)))
    assert spans == [(0, 1), (1, 2), (2, 12)]
    for k in whole.metrics:
        np.testing.assert_array_equal(whole.metrics[k], metrics[k], err_msg=k)


def test_slow_host_work_does_not_shrink_time_sized_chunks(monkeypatch):
    """A boundary whose host work (parts, checkpoint) outlasts the device's chunk must not pin
    the chunks to one generation each: before the fix every call measured the host's 0.2 s and
    ran int(0.25 / 0.2) = 1 generation, i.e. 39 calls for 40 generations."""
    from collapse_jax import plan as planmod

    static, ids, root = _static(*BITWISE[0][:4], generations=40), np.arange(4), jax.random.key(4)
    whole = run_sweep(static, root, ids, _hp("gaussian", 4), {}, generation_chunk=39)
    monkeypatch.setattr(planmod, "CHUNK_SECONDS", 0.25)
    spans = []

    def slow_boundary(out):
        spans.append((out.gen_start, out.gen_stop))
        time.sleep(0.2)

    metrics = _observed(static, root, ids, _hp("gaussian", 4), slow_boundary)
    starts = [a for a, _ in spans]
    assert starts == sorted(starts) and spans[-1][1] == 40
    assert all(b == c for (_, b), (c, _) in zip(spans[:-1], spans[1:], strict=True))
    # 1 (init), 1, then growing chunks (at least doubling while the device idles, and aiming at
    # 0.2 s / HOST_SHARE = 4 s of work): a handful of calls, not ~40
    assert len(spans) <= 8, spans
    for k in whole.metrics:
        np.testing.assert_array_equal(whole.metrics[k], metrics[k], err_msg=k)


_DEVICES_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    import collapse_jax as cj
    from collapse_jax.sweep import run_sweep
    assert jax.device_count() == 8, jax.devices()
    out = {}
    for model, regime, n, d in %r:
        static = cj.StaticConfig(model=model, regime=regime, n0=n, n=n, d=d, generations=5,
                                 n_test=8)
        hp = {k: np.linspace(v, 2 * v, 11, dtype=np.float32)
              for k, v in cj.MODELS[model].hparams.items()}
        r = run_sweep(static, jax.random.key(3), np.arange(11), hp, {}, generation_chunk=3)
        assert r.chunk_size == 16 and r.positions.tolist() == list(range(11))  # 5 padded
        for m, v in r.metrics.items():
            out[f"{model}/{regime}/{m}"] = v
        # 8 chains on 8 devices: still 2 per device (8 padded), the same compiled programs
        r = run_sweep(static, jax.random.key(3), np.arange(8), {k: v[:8] for k, v in hp.items()},
                      {}, generation_chunk=3)
        assert r.chunk_size == 16
        for m, v in r.metrics.items():
            out[f"{model}/{regime}/8/{m}"] = v
    np.savez(sys.argv[1], **out)
""")


def _one_vs_eight_devices(tmp_path, pairs, chunk_size):
    """Metrics of ``pairs`` on 8 fake CPU devices (subprocess: 16 chains, 2 per device) and here
    on one device with ``chunk_size`` chains per batch; asserts they are bit-identical."""
    script = tmp_path / "devices.py"
    script.write_text(_DEVICES_SCRIPT % (pairs,))
    proc = subprocess.Popen(  # runs while this process computes the reference (2 cores)
        [sys.executable, str(script), str(tmp_path / "out.npz")], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env=child_env("--xla_force_host_platform_device_count=8"))
    try:
        refs = {}
        for model, regime, n, d in pairs:
            r = run_sweep(_static(model, regime, n, d, generations=5), jax.random.key(3),
                          np.arange(11), _hp(model, 11), {}, generation_chunk=3,
                          chunk_size=chunk_size)
            assert r.chunk_size == (chunk_size or 11)
            refs[model, regime] = r.metrics
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    got = np.load(tmp_path / "out.npz")
    for (model, regime), ref in refs.items():
        assert ref
        for m, v in ref.items():
            np.testing.assert_array_equal(got[f"{model}/{regime}/{m}"], v,
                                          err_msg=f"{model} {regime} {m}")
            if chunk_size is None:  # batch-independent families: also the 8-chain sweep
                np.testing.assert_array_equal(got[f"{model}/{regime}/8/{m}"], v[:8],
                                              err_msg=f"{model} {regime} {m} (8 chains)")


def test_one_device_and_eight_fake_devices_agree_bitwise(tmp_path):
    """Same chains on 8 fake CPU devices (2 chains per device) and on one device (all 11 chains in
    one batch): the Gaussian, linear regression and categorical families under ``replace`` and
    ``accumulate`` (and the Gaussian under ``accumulate_subsample``) agree bit for bit. So does a
    sweep of 8 chains on the 8 devices, which the plan pads to 2 per device
    (``plan.MIN_CHAINS_PER_DEVICE``; one chain per device gave different Gaussian covariances
    and linear regression errors, because XLA lowers the dots of a batch of one differently).

    Regression test for the Gaussian fit, which used to differ by 1 ulp: XLA's CPU algebraic
    simplifier rewrites ``a / broadcast(b)`` as ``a * broadcast(1 / b)`` only when ``b`` has one
    use, and in a sharded program CSE runs before it (merging the mean's and the covariance's
    denominators), so the 1-device program multiplied and the 8-device one divided. The pool's
    statistics now multiply by ``pool.safe_reciprocal`` in every program.

    KDE and GMM: ``test_kde_and_gmm_agree_bitwise_on_eight_fake_devices_at_equal_batch``. The
    Gaussian's equality at another batch per device holds at these sizes, not always: its
    ``logdet_ratio`` goes through ``log``, which can round 1 ulp apart with the batch (measured:
    the 10,000-seed sweep, d = 10, n = 10, on 1 vs 2 devices).
    """
    _one_vs_eight_devices(tmp_path, BITWISE, chunk_size=None)


@pytest.mark.slow  # ~60 s on 2 busy cores
def test_kde_and_gmm_agree_bitwise_on_eight_fake_devices_at_equal_batch(tmp_path):
    """KDE and GMM under ``replace`` and ``accumulate``: bit-identical on 1 and 8 devices at the
    same number of chains per device (2), so sharding is exact for them too.

    With a different batch per device they differ in the last ulp (then more, through EM): XLA CPU
    evaluates ``exp`` / ``log`` in the vectorised body of a loop and in its tail with results that
    can differ by 1 ulp, and the batch size decides which elements fall in the tail. Minimal
    reproduction (jaxlib 0.10.2): ``jax.jit(jnp.exp)(np.full((n,), np.float32(-0.39631456)))`` is
    0.67279506 for n in 1, 2, 4, 8, 9, 10, 12 and 0.672795 for n in 3, 5, 6, 7, 11, 13. A batch of
    one chain per device differs for every family (XLA drops the unit batch dimension and lowers
    the dots differently), so sweeps should keep >= 2 chains per device.
    """
    _one_vs_eight_devices(tmp_path, SAME_BATCH, chunk_size=2)


def test_run_sweep_fills_unnamed_hparams_with_defaults_and_refuses_unknown_names():
    static = cj.StaticConfig(model="linear_regression", regime="replace", n0=8, n=8, d=2,
                             generations=3, n_test=8)
    ids, key = np.arange(3), jax.random.key(1)
    short = cj.run_sweep(static, key, ids, {"sigma": 2.0}, {})
    full = cj.run_sweep(static, key, ids, {"sigma": 2.0, "noise_ratio": 1.0}, {})
    np.testing.assert_array_equal(short.metrics["test_error"], full.metrics["test_error"])
    with pytest.raises(ConfigError, match=r"unknown sgima .* reads noise_ratio, sigma"):
        cj.run_sweep(static, key, ids, {"sgima": 2.0}, {})
