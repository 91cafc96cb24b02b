"""The HTML report's own script, run in a real JavaScript engine (V8, via mini-racer) against a
small stand-in for the browser's DOM: it draws every panel without an error, one bar per attempt
in view, its axes start where the PNG's do, and it says so when a long lead-in is cut.

No browser is available where kubevine is tested; this runs the exact script the page ships,
with only `document`/`window` stood in for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from py_mini_racer import MiniRacer

from kubevine import report, txformat
from kubevine.report import html as report_html

from .helpers import RunResult

DOM = """
var elements = {};
function Element(id) {
  this.id = id; this.innerHTML = ""; this.textContent = ""; this.clientWidth = 1100;
  this.style = {}; this.attributes = {}; this.firstChild = this;
}
Element.prototype.addEventListener = function () {};
Element.prototype.setAttribute = function (k, v) { this.attributes[k] = v; };
Element.prototype.getAttribute = function (k) { return this.attributes[k]; };
Element.prototype.querySelector = function () { return this; };
Element.prototype.getBoundingClientRect = function () { return {left: 0, top: 0, width: 1100, height: 400}; };
var document = {getElementById: function (id) {
  if (!elements[id]) elements[id] = new Element(id);
  return elements[id];
}};
var window = {addEventListener: function () {}};
"""


def run_page(page: str) -> dict[str, dict[str, Any]]:
    """Run the page's script; every element it touched: its innerHTML and textContent."""
    data = re.search(r'<script type="application/json" id="kubevine-run">(.*?)</script>', page, re.S)
    script = re.search(r"<script>(.*)</script>", page, re.S)
    assert data and script
    js = MiniRacer()
    js.eval(DOM)
    js.eval(f"document.getElementById('kubevine-run').textContent = {json.dumps(data.group(1))};")
    js.eval(script.group(1))
    touched = js.eval(
        "JSON.stringify(Object.keys(elements).reduce(function (o, k) {"
        " o[k] = {html: elements[k].innerHTML, text: elements[k].textContent}; return o; }, {}))"
    )
    result: dict[str, dict[str, Any]] = json.loads(str(touched))
    return result


def axis_labels(svg: str) -> list[float]:
    """The numeric tick labels along the bottom of a panel."""
    return [float(v) for v in re.findall(r'text-anchor="middle"[^>]*>(-?[0-9.]+)</text>', svg)]


def test_the_page_script_draws_every_panel_and_a_bar_per_attempt(
    finished_run: RunResult, tmp_path: Path
) -> None:
    run = report.load(finished_run.log)
    d = report_html.render(run, tmp_path / "run.html")
    out = run_page((tmp_path / "run.html").read_text())
    timeline, states, moved = out["timeline"]["html"], out["states"]["html"], out["bytes"]["html"]
    assert timeline.startswith("<svg") and states.startswith("<svg") and moved.startswith("<svg")
    in_view = [b for b in d["bars"] if b[5] >= d["view_from"]]
    assert timeline.count("<rect") >= len(in_view)  # one per attempt, plus the worker bands
    assert states.count("<path") >= 2 and moved.count("<path") == len(txformat.SOURCES)
    for name in ("reco", "skim", "fit", "doomed", "failed attempt"):
        assert name in out["legend"]["html"]
    assert "manager: " in out["bytes-legend"]["html"]


def _slow_start(tmp_path: Path) -> Path:
    lines = ["0 m MANAGER m started workflow=wf port=1"]
    for w in ("w1", "w2"):
        lines.append(f"20000000 m WORKER {w} connected node=n cores=1")
    for i in range(20):
        t = 20_100_000 + i * 100_000
        lines += [
            f"20050000 m TASK {i} waiting cores=1",
            f"20050000 m TASK {i} ready attempt=0 worker=- cause=submitted",
            f"{t} m TASK {i} dispatched attempt=1 worker=w{1 + i % 2} cause=placed",
            f"{t + 90_000} m TASK {i} done attempt=1 worker=w{1 + i % 2} cause=success",
        ]
    log = tmp_path / "tx.log"
    log.write_text("".join(line + "\n" for line in lines))
    return log


def test_a_long_lead_in_is_cut_in_the_page_as_in_the_png(tmp_path: Path) -> None:
    run = report.load(_slow_start(tmp_path))
    d = report_html.render(run, tmp_path / "run.html")
    assert 19 < d["view_from"] < 20
    out = run_page((tmp_path / "run.html").read_text())
    assert "the first 19." in out["cut"]["text"]
    for panel in ("timeline", "states", "bytes"):
        ticks = axis_labels(out[panel]["html"])
        assert ticks and min(ticks) >= 19, (panel, ticks)  # the axes start at the work, not at 0
