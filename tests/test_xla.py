"""The XLA CPU settings collapse_jax applies on import (``collapse_jax/_xla.py``): one CPU device
per usable core (at most ``MAX_CPU_DEVICES``) unless ``COLLAPSE_JAX_CPU_DEVICES`` or the user's
``XLA_FLAGS`` say otherwise, and a clear error for a bad value. Each case is a fresh interpreter
(XLA reads its flags once, when the CPU backend starts); they run at the same time."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import child_env

from collapse_jax._xla import ENV_CPU_DEVICES, MAX_CPU_DEVICES

SCRIPT = "import collapse_jax, jax; print(jax.device_count(), jax.default_backend())"


def _run_all(cases: dict[str, dict[str, str]]) -> dict[str, subprocess.CompletedProcess]:
    procs = {}
    for name, env in cases.items():
        procs[name] = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


def _env(xla_flags: str = "", devices: str | None = None) -> dict[str, str]:
    env = child_env()
    env["XLA_FLAGS"] = xla_flags  # none of the tests' flags: the bare default
    env.pop(ENV_CPU_DEVICES, None)
    if devices is not None:
        env[ENV_CPU_DEVICES] = devices
    return env


def test_one_cpu_device_per_core_unless_the_variable_or_xla_flags_say_otherwise():
    cores = min(len(os.sched_getaffinity(0)), MAX_CPU_DEVICES)
    out = _run_all({
        "default": _env(),
        "variable": _env(devices="3"),
        "one": _env(devices="1"),
        "xla_flags win": _env("--xla_force_host_platform_device_count=2", devices="5"),
        "bad value": _env(devices="two"),
    })
    for name, want in (("default", cores), ("variable", 3), ("one", 1), ("xla_flags win", 2)):
        r = out[name]
        assert r.returncode == 0, (name, r.stderr[-2000:])
        assert r.stdout.split() == [str(want), "cpu"], (name, r.stdout)
    bad = out["bad value"]
    assert bad.returncode != 0
    assert f"{ENV_CPU_DEVICES}='two': must be a positive integer" in bad.stderr
