"""Progress on stderr while a run goes: a bar counted in chains, with the group and generation.

``progress_reporter(progress, total)`` turns ``run_experiment``'s ``progress`` argument into a
function ``report(label, chains_done)``: a tqdm bar (``True``), the user's callable
``(label, chains_done, total)``, or nothing (``False``). ``label`` None closes the bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def progress_reporter(progress, total: int) -> Callable[[str | None, float], None]:
    """A ``report(label, chains_done)`` function for ``progress`` (see the module docstring)."""
    if callable(progress):
        return lambda label, done: progress(label, done, total)
    if not progress:
        return lambda label, done: None
    from tqdm.auto import tqdm  # only runs that show a bar need it

    bar = tqdm(total=total, unit="chain", file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} chains "
                          "[{elapsed}<{remaining}, {rate_fmt}]")

    def update(label, done):
        if label is not None:
            bar.set_description(label, refresh=False)
        bar.update(done - bar.n)
        if label is None:
            bar.close()

    return update
