"""The simulator's HTML report in a real browser (headless Chromium, Debian's `chromium`): the page
renders, every plot inlined as a data: URI decodes and loads, and a screenshot shows the plots,
so a blank page or a broken image fails. A second test breaks one image on purpose and checks
that it is reported as not loaded, so the check is known to be live.

The report is built from the same synthetic run as tests/test_scenario.py's report tests. Chromium
runs without sandbox or GPU, on a temporary profile, with name resolution and background
networking off (the page needs no network), in its own process group, killed by group on timeout.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_scenario import DEFAULT, events_of, synthetic_run

from scenarios.report import summarize, write_report

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed: `make test` installs it as root on Debian (bash .ci/system-deps)")

TIMEOUT_S = 60
WINDOW = (1200, 8000)  # tall enough for the whole report: the screenshot is of the viewport
# On window load: how many <img> there are, how many decoded (complete with a natural width),
# the alt text of those that did not, and the rendered height of the h1 (0 when not laid out).
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = Array.from(document.images), ok = imgs.filter(i => i.complete && i.naturalWidth > 0);
  const h1 = document.querySelector('h1');
  document.body.setAttribute('data-images', imgs.length + '/' + ok.length);
  document.body.setAttribute('data-broken', imgs.filter(i => !ok.includes(i)).map(i => i.alt).join(','));
  document.body.setAttribute('data-h1-height', h1 ? h1.getBoundingClientRect().height : 0);
});</script>"""
LINE_BLUE = (0x1F, 0x77, 0xB4)  # matplotlib's first colour (tab:blue): the reward lines
BAR_ORANGE = (0xFF, 0x7F, 0x0E)  # tab:orange: the staleness bars and lag line


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    """index.html and summary.json of a synthetic run, with a network and a timeline (every plot)."""
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("browser")
    summary = summarize(DEFAULT, events_of(synthetic_run(root)), wall_s=1, outcome="done")
    summary["network"] = {"emulation": "network namespaces: ...", "emulator_cpu_s": 1.5, "links": [
        {"between": ["eu", "asia"], "configured_rtt_ms": 90.0, "measured_rtt_ms": 93.2, "within_15pct": True}]}
    summary["timeline"] = [{"t": 12.3, "at_s": 12, "action": "partition", "target": "eu-asia"}]
    write_report(summary, root / "report")
    return root / "report" / "index.html", json.loads((root / "report" / "summary.json").read_text())


def with_probe(page: str) -> str:
    assert page.count("</body>") == 1
    return page.replace("</body>", PROBE + "</body>")


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless Chromium run on a fresh profile; its whole process group is killed on timeout."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp / 'profile'}", "--no-first-run", "--disable-extensions", "--disable-sync",
           "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
           "--disable-crash-reporter", "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--virtual-time-budget=5000", *args]
    env = {**os.environ, "HOME": str(tmp)}  # keep ~/.pki and the like out of the real home
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT_S} s: {' '.join(cmd)}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class Dom(HTMLParser):
    """The dumped DOM's title, h1 text and the probe's attributes on <body>."""

    def __init__(self, text: str):
        super().__init__()
        self.title, self.h1, self.body, self._in = "", "", {}, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.body = dict(attrs)
        self._in = tag if tag in ("title", "h1") else self._in

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "h1":
            self.h1 += data


def render(page: str, tmp: Path) -> Dom:
    """The DOM Chromium holds after loading `page` (with the probe) from a file:// URL."""
    path = tmp / "page.html"
    path.write_text(with_probe(page))
    result = chromium(tmp, "--dump-dom", path.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom(result.stdout)
    assert "data-images" in dom.body, f"the probe did not run (no load event?): {result.stdout[:500]!r}"
    return dom


def images(dom: Dom) -> tuple[int, int]:
    total, loaded = map(int, dom.body["data-images"].split("/"))
    return total, loaded


def test_the_report_renders_in_a_browser_with_every_image_loaded(report, tmp_path):
    index, summary = report
    plots = [k for k in summary["plots"] if k != "skipped"]
    dom = render(index.read_text(), tmp_path)

    assert dom.title == "default" and dom.h1 == "default: done"
    assert float(dom.body["data-h1-height"]) > 0  # laid out, not only parsed
    total, loaded = images(dom)
    assert loaded == total >= len(plots) >= 6, (
        f"{loaded} of {total} images loaded, {len(plots)} plots; not loaded: {dom.body['data-broken']}")

    shot = tmp_path / "shot.png"
    result = chromium(tmp_path, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                      (tmp_path / "page.html").as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from PIL import Image  # matplotlib's own dependency

    img = Image.open(shot).convert("RGB")
    assert img.size == WINDOW
    counts = {rgb: n for n, rgb in img.getcolors(maxcolors=img.width * img.height)}
    assert len(counts) > 500, len(counts)  # text, tables and plots, not a blank or one-colour page
    white = counts.get((255, 255, 255), 0)
    assert white < 0.98 * img.width * img.height, white
    # the plots' own colours, drawn by the browser from the decoded PNGs (anti-aliasing: near matches too)
    for colour, least in ((LINE_BLUE, 500), (BAR_ORANGE, 10000)):
        near = sum(n for rgb, n in counts.items() if max(abs(a - b) for a, b in zip(rgb, colour)) <= 8)
        assert near >= least, (colour, near)


def test_a_broken_image_is_reported_as_not_loaded(report, tmp_path):
    """The check above is live: one plot whose data URI is no longer a PNG does not load."""
    index, _ = report
    page = index.read_text()
    uris = re.findall(r'alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) >= 6
    alt, data = uris[1]
    raw = bytearray(base64.b64decode(data))
    raw[:16] = b"not a png header"  # the signature and IHDR chunk gone: nothing to decode
    page = page.replace(data, base64.b64encode(bytes(raw)).decode(), 1)

    dom = render(page, tmp_path)
    total, loaded = images(dom)
    assert (total, loaded) == (len(uris), len(uris) - 1)
    assert dom.body["data-broken"] == alt
