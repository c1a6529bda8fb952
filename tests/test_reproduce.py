"""``collapse-jax reproduce``: reports written, figures embedded, verdicts honest, bad names
refused, and the HTML report rendered by a real (headless) browser."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from collapse_jax import cli, theory
from collapse_jax.reproduce import studies
from collapse_jax.reproduce.core import Check, Study, mean_curve, per_seed
from collapse_jax.reproduce.runner import reproduce
from collapse_jax.reproduce.verdict import Estimate, judge, mean_se, median_se, ratio_se

CHEAP = ("linreg_exact", "dey_donoho_mean")
PNG = b"\x89PNG\r\n\x1a\n"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    assert cli.main(["reproduce", "--quick", "--only", ",".join(CHEAP), "--out", str(out)]) == 0
    return out


def _images(page: str) -> list[bytes]:
    srcs = re.findall(r"<img[^>]*src='([^']*)'", page)
    assert srcs, "no <img> in the report"
    out = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:40]
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def test_quick_only_writes_both_reports(report, capfd):
    md, page = (report / "report.md").read_text(), (report / "report.html").read_text()
    for name in CHEAP:
        assert (report / name / "config.json").is_file()  # a normal run directory
        assert (report / name / "metrics").is_dir()
        assert f"![{name}]({name}.png)" in md and (report / f"{name}.png").is_file()
        assert "collapse-jax run configs/" in md and f"--out {report / name}" in md
    images = _images(page)
    assert len(images) == len(CHEAP) and all(b.startswith(PNG) for b in images)
    assert "http://" not in page and "https://" not in page  # opens offline
    # every verdict row of the markdown summary is a row of the HTML summary table
    rows = [line for line in md.split("## Summary", 1)[1].split("\n## ", 1)[0].splitlines()
            if line.startswith("| ") and not line.startswith("| study")]
    summary = page.split("<table class=\"summary\">", 1)[1].split("</table>", 1)[0]
    assert len(rows) >= 8
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[5].split()[0] in ("PASS", "DIFFERS")
        assert f"<td>{html.escape(cells[1])}</td>" in summary
    # the exactness study's contrast with the proportional limit differs, as expected
    assert "DIFFERS (expected)" in md
    assert "| PASS |" in md


def test_wrong_closed_form_differs(tmp_path):
    """Negative control: a study whose 'closed form' is the replace law for accumulate."""

    def wrong(table, exp):
        v = per_seed(table, "error", regime="accumulate")
        g = np.arange(exp.generations)
        bad = g + 1.0  # the replace law, not sum 1/j^2
        right = theory.location_variance_ratio(g)
        return ([Check("wrong law", ratio_se(v[:, -1], v[:, 0]), float(bad[-1]), "injected"),
                 Check("right law", ratio_se(v[:, -1], v[:, 0]), float(right[-1]), "theory")],
                [mean_curve(v / v[:, :1].mean(), "ratio", "accumulate", bad)])

    study = Study("negative_control", "wrong closed form", "none", "location",
                  ("regimes=accumulate", "seeds=400", "generations=6"), (), wrong)
    (out,) = reproduce(tmp_path, studies=[study], stream=io.StringIO())
    (c_bad, v_bad), (c_ok, v_ok) = out.checks
    assert v_bad.status == "DIFFERS" and v_bad.z < -3
    assert v_ok.status == "PASS"
    md = (tmp_path / "report.md").read_text()
    assert "| negative_control | wrong law |" in md and "| DIFFERS |" in md


def test_bad_only_exits_2_naming_allowed(tmp_path, capsys):
    assert cli.main(["reproduce", "--only", "gaussian_replace,nope", "--out",
                     str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--only" in err and "nope" in err and "allowed:" in err
    assert all(name in err for name in studies.NAMES)
    assert not (tmp_path / "report.html").exists()


def test_verdicts_and_estimates():
    assert judge(Estimate(1.0, 0.1), 1.25).status == "PASS"
    assert judge(Estimate(1.0, 0.1), 1.35).status == "DIFFERS"
    assert judge(Estimate(2.0, 0.1), 1.0, "at_most").status == "DIFFERS"
    assert judge(Estimate(0.5, 0.1), 1.0, "at_most").status == "PASS"
    assert judge(Estimate(0.5, 0.1), 0.0, "greater").status == "PASS"
    assert judge(Estimate(0.2, 0.1), 0.0, "greater").status == "DIFFERS"
    with pytest.raises(ValueError, match="allowed"):
        judge(Estimate(0.0, 1.0), 0.0, "roughly")
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 4000)
    assert abs(mean_se(x).value - 3.0) < 4 * mean_se(x).se
    m = median_se(x)
    assert abs(m.value - 3.0) < 4 * m.se and 0.02 < m.se < 0.06  # ~1.2533 * 2 / sqrt(4000)
    r = ratio_se(2.0 * x + rng.normal(0, 0.1, 4000), x)
    assert abs(r.value - 2.0) < 4 * r.se


def test_every_study_resolves():
    """Each study's overrides apply to its config (full and quick) without compiling."""
    from collapse_jax.overrides import override
    from collapse_jax.reproduce.runner import load, study_sets
    from collapse_jax.validate import resolve

    for s in studies.STUDIES:
        for quick in (False, True):
            resolve(override(load(s.config), list(study_sets(s, quick))))


_MEASURE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images).map(i => [i.complete, i.naturalWidth]);
  const t = document.querySelector('table.summary'); const r = t.getBoundingClientRect();
  const st = getComputedStyle(t);
  const m = {imgs, table: [r.width, r.height, st.display, st.visibility],
             rows: t.querySelectorAll('tr').length};
  const p = document.createElement('pre'); p.id = 'measure';
  p.textContent = JSON.stringify(m); document.body.appendChild(p);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    page = tmp_path / "measured.html"
    page.write_text((report / "report.html").read_text().replace("</body>",
                                                                   _MEASURE + "</body>"))
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    found = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    m = json.loads(html.unescape(found.group(1)))
    assert len(m["imgs"]) == len(CHEAP)
    assert all(done and width > 0 for done, width in m["imgs"]), m["imgs"]
    width, height, display, visibility = m["table"]
    assert width > 0 and height > 0 and display != "none" and visibility == "visible"
    assert m["rows"] >= 9  # header + the checks of both studies
    shot = tmp_path / "report_screenshot.png"  # kept as the test's artifact
    subprocess.run([*base, "--window-size=1200,1600", f"--screenshot={shot}",
                    (report / "report.html").as_uri()], capture_output=True, timeout=60,
                   check=True)
    assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 10_000
