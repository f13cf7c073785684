"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol messages from fd 3 and
writes them to fd 4, each a JSON object terminated by a NUL byte. The small client below
(:class:`DevTools`, stdlib only) sends commands with increasing ids, and a reader thread files
responses by id and keeps every event (console calls, exceptions, log entries, network requests)
for the assertions. Every wait has a timeout and the browser is killed in ``finally``, so a hung
browser fails the test instead of hanging CI.

Chromium is part of the project's setup (``make setup`` installs the Debian package), so a
missing browser fails the test with the command to install it rather than skipping it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spectra.jobs.demo import run_demo
from spectra.report.html import attention_weights

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("SPECTRA_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_S = 30.0


class DevTools:
    """A Chromium process and a DevTools-protocol connection over its debugging pipe."""

    def __init__(self, binary: str, user_data_dir: Path, log_path: Path) -> None:
        read_end, self._to_browser = os.pipe()
        self._from_browser, write_end = os.pipe()
        # The child's ends move above fd 9 so that putting them on 3 and 4 cannot close one another.
        to_browser_r, from_browser_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (read_end, write_end))
        os.close(read_end)
        os.close(write_end)
        args = [
            "--headless=new",
            "--no-sandbox",  # root in a container has no usable sandbox; we only open our own file
            "--remote-debugging-pipe",
            f"--user-data-dir={user_data_dir}",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--hide-scrollbars",
            "--window-size=1280,1800",
            "about:blank",
        ]
        # bash puts the pipe ends on fds 3 (Chromium reads) and 4 (Chromium writes), then execs the browser.
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self._log = open(log_path, "wb")
        try:
            self.process = subprocess.Popen(
                ["/bin/bash", "-c", script, binary, *args],
                pass_fds=(to_browser_r, from_browser_w),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(to_browser_r)
            os.close(from_browser_w)
        self._next_id = 0
        self._responses: dict[int, dict] = {}
        self.events: list[dict] = []
        self._closed = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._responses[message["id"]] = message
                    else:
                        self.events.append(message)
                self._cond.notify_all()

    def call(
        self, method: str, params: dict | None = None, *, session: str | None = None, timeout: float = TIMEOUT_S
    ) -> dict:
        """Sends a command and returns its result; raises on a protocol error, a timeout or a dead browser."""
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data) :]
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._responses:
                if self._closed:
                    raise RuntimeError(f"{method}: the browser closed the pipe (exit code {self.process.poll()})")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{method}: no answer from the browser within {timeout:.0f} s")
                self._cond.wait(left)
            response = self._responses.pop(ident)
        if "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response.get("result", {})

    def wait_event(
        self, method: str, *, session: str | None = None, since: int = 0, timeout: float = TIMEOUT_S
    ) -> dict:
        """The first event ``method`` (of ``session``) at or after index ``since`` of :attr:`events`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if event["method"] == method and (session is None or event.get("sessionId") == session):
                        return event
                if self._closed:
                    raise RuntimeError(f"waiting for {method}: the browser closed the pipe")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {method} event within {timeout:.0f} s")
                self._cond.wait(left)

    def close(self) -> None:
        try:
            if self.process.poll() is None and not self._closed:
                try:
                    self.call("Browser.close", timeout=5)
                except (RuntimeError, TimeoutError, OSError):
                    pass
                self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._log.close()


class Page:
    """One tab of a :class:`DevTools` browser, attached with a flat session."""

    def __init__(self, browser: DevTools) -> None:
        self.browser = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 1800, "deviceScaleFactor": 1, "mobile": False},
        )

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.browser.call(method, params, session=self.session)

    def open(self, url: str) -> None:
        since = len(self.browser.events)
        self.call("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired", session=self.session, since=since)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (Input events) in the middle of the element ``selector``."""
        x, y = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)}); el.scrollIntoView({{block: 'center'}});"
            " const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def viewer(self) -> dict:
        """The viewer's title, the rendered weight of every token (None where hidden) and the query."""
        return self.evaluate(
            "JSON.stringify({title: document.getElementById('viewer-title').textContent,"
            " weights: Array.from(document.querySelectorAll('#tokens .tok')).map(s => s.dataset.weight ?? null),"
            " query: window.spectraReport.state.query})"
        )

    def screenshot(self, path: Path) -> None:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and requests that left the file."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(
                    f"console.{params['type']}: {[a.get('value', a.get('description')) for a in params['args']]}"
                )
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(f"exception: {details.get('exception', {}).get('description', details.get('text'))}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']['text']} ({params['entry'].get('url', '')})")
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if not url.startswith(("file:", "data:", "about:", "blob:")):
                    found.append(f"network request: {url}")
        return found


def _embedded_data(report: Path) -> dict:
    text = report.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)[1])


def _as_floats(weights: list) -> np.ndarray:
    return np.array([float(w) if w is not None else 0.0 for w in weights])


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report the demo writes (tiny-llama, 2 windows of 64 tokens)."""
    out = tmp_path_factory.mktemp("demo")
    run_demo(context_length=64, n_samples=2, batch_size=2, out_dir=out, progress=False)
    return out / "report.html"


def test_report_in_headless_chromium(request, tmp_path):
    # A missing browser fails the test (make setup installs it); it is not a reason to skip.
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"chromium not found at {CHROMIUM} (set SPECTRA_CHROMIUM to another binary); the project's "
            "setup installs it: apt-get install -y --no-install-recommends chromium (make setup)"
        )
    report = request.getfixturevalue("report")  # built only once the browser is known to exist
    data = _embedded_data(report)
    view, grid = data["viewer"], data["grid"]
    assert view["available"], view.get("reason")

    browser = DevTools(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        page = Page(browser)
        page.open(report.resolve().as_uri())

        # The head grid: one cell per (layer, head), each with a tooltip naming a class or why there is none.
        assert (
            page.evaluate("document.querySelectorAll('#head-grid .cell').length")
            == grid["n_layers"] * grid["n_heads"]
            == 32
        )
        titles = page.evaluate("Array.from(document.querySelectorAll('#head-grid .cell')).map(c => c.title)")
        assert all("class" in t for t in titles), titles[:3]

        # Initial selection: L0H0, query = last token; the rendered weights are the Python numbers.
        first = json.loads(page.viewer())
        assert first["title"].startswith("Layer 0 · head 0 (KV head 0) · sample 0 · query token 63")
        expected = attention_weights(view, 0, 0, 0, 63)
        np.testing.assert_allclose(_as_floats(first["weights"]), expected, rtol=0, atol=1e-12)

        # Clicking grid cell L2H5 selects that head in the viewer: new title, new weights.
        page.click('#head-grid .cell[data-layer="2"][data-head="5"]')
        second = json.loads(page.viewer())
        assert second["title"].startswith("Layer 2 · head 5 (KV head 1) · sample 0 · query token 63"), second["title"]
        assert second["weights"] != first["weights"]
        assert page.evaluate("document.querySelector('#head-grid .cell.selected').dataset.head") == "5"
        np.testing.assert_allclose(
            _as_floats(second["weights"]), attention_weights(view, 2, 5, 0, 63), rtol=0, atol=1e-12
        )

        # Clicking a token makes it the query: weights only on keys 0..10, equal to Python's.
        page.click('#tokens .tok[data-pos="10"]')
        third = json.loads(page.viewer())
        assert third["query"] == 10 and "query token 10" in third["title"]
        rendered = third["weights"]
        assert all(w is not None for w in rendered[:11]) and all(w is None for w in rendered[11:])
        np.testing.assert_allclose(_as_floats(rendered), attention_weights(view, 2, 5, 0, 10), rtol=0, atol=1e-12)
        assert abs(sum(_as_floats(rendered)) - 1) < 1e-12

        # The metric <select> repaints the grid.
        before = page.evaluate("document.querySelector('#head-grid .cell').dataset.value")
        page.evaluate(
            "(() => { const s = document.getElementById('metric-select'); s.value = 'sink_mass_mean';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        after = page.evaluate("document.querySelector('#head-grid .cell').dataset.value")
        assert before != after and float(after) == pytest.approx(grid["values"]["sink_mass_mean"][0][0])

        page.click('#head-grid .cell[data-layer="1"][data-head="6"]')
        shot = tmp_path / "report.png"
        page.screenshot(shot)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(shot, ARTIFACTS / "report.png")
        print(f"screenshot: {shot} (copied to {ARTIFACTS / 'report.png'})")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        problems = page.problems()
        assert not problems, "\n".join(problems)
    finally:
        browser.close()
    assert browser.process.returncode is not None
