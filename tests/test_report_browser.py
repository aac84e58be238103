"""`isa report` in a real headless browser (Chromium): the table's rows exist, every image
decodes, a click on a header sorts the rows, and a screenshot is saved to look at
(to $ISA_REPORT_SCREENSHOT when set). Skipped, saying why, when no Chromium is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from isa_core.sweeps import read_results
from tests.test_report import Page, report, tiny_sweep  # noqa: F401  (the sweep fixture)

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
HANG_GUARD_S = 600  # a browser that never returns fails the test instead of hanging CI

# Injected into a copy of the page: once everything has loaded, count the decoded images and
# click the MIG header twice, recording the first run id after each click.
PROBE = """
<script>
window.addEventListener("load", function () {
  var body = document.body, images = Array.from(document.images);
  body.dataset.images = images.length;
  body.dataset.imagesOk = images.filter(function (i) {
    return i.complete && i.naturalWidth > 0;
  }).length;
  var first = function () {
    return document.querySelector("#results tbody tr td").dataset.sort;
  };
  var mig = Array.from(document.querySelectorAll("#results th")).find(function (th) {
    return th.textContent.trim() === "MIG";
  });
  mig.click();
  body.dataset.firstAscending = first();
  mig.click();
  body.dataset.firstDescending = first();
});
</script>
"""


@pytest.fixture
def chromium() -> str:
    """The browser's path; the test is skipped, saying why, when there is none (checked
    before the sweep is built)."""
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found is None:
        reason = f"no Chromium on PATH (looked for {', '.join(BROWSERS)}); .ci/run installs it"
        print(reason)
        pytest.skip(reason)
    return found


def browse(browser: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    done = subprocess.run(
        [browser, *flags, *args], capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_the_report_renders_in_chromium(
    chromium: str,
    tiny_sweep: Path,  # noqa: F811
    tmp_path: Path,
    capsys,
) -> None:
    browser = chromium
    out = tmp_path / "report.html"
    code, _, err = report([tiny_sweep, "-o", out, "-q"], capsys)
    assert code in (0, None), err
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text().replace("</body>", PROBE + "</body>"))

    dom = browse(browser, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()).stdout
    marks = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', dom.split("<body", 1)[1].split(">")[0]))
    page = Page(dom)
    results = read_results(tiny_sweep / "results.jsonl")
    assert len(page.rows) == len(results)
    assert int(marks["images"]) == len(Page(out.read_text()).images) > 0
    assert marks["images-ok"] == marks["images"]  # every embedded image decoded
    by_mig = sorted(results, key=lambda r: r.mig)
    assert marks["first-ascending"] == by_mig[0].id
    assert marks["first-descending"] == by_mig[-1].id

    screenshot = Path(os.environ.get("ISA_REPORT_SCREENSHOT") or tmp_path / "report.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browse(browser, f"--screenshot={screenshot}", "--window-size=1280,2000", out.as_uri())
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    print(f"screenshot of the report: {screenshot}")
