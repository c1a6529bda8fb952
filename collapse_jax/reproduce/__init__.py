"""``collapse-jax reproduce``: curated studies that put the simulations beside the literature.

``studies.py`` lists them, ``classical.py`` / ``neural.py`` check them, ``verdict.py`` judges a
number against its reference, ``report.py`` writes ``report.md`` and a self-contained
``report.html``, ``runner.py`` runs it all (``reproduce(out, quick=..., only=...)``).
"""
