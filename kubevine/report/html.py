"""The HTML picture of a run (``kubevine report LOG -o run.html``): one file, no server.

The page carries the run as JSON (``<script type="application/json" id="kubevine-run">``)
and a little JavaScript that draws it as SVG: the workers-by-time timeline with one bar per
attempt (hover for the task, drag to zoom, double-click to reset), transfers, manager
restarts, and the tasks-by-state and bytes-by-source panels. Nothing is fetched from the
network, so the file can be mailed, attached to a CI run or opened offline; the embedded
data doubles as a machine-readable summary of the run.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from kubevine.report import (
    Run,
    bytes_series,
    groups,
    layout,
    stacked_bytes,
    state_series,
    summary,
    view_start,
)
from kubevine.report.png import PALETTE, SOURCE_COLOURS, STATE_STYLE
from kubevine.txformat import SOURCES, TASK_STATES

#: the columns of each entry of ``bars`` in the embedded data
BAR_FIELDS = ("task", "attempt", "worker", "lane", "start", "end", "group", "outcome")


def data(run: Run, title: str | None = None) -> dict[str, Any]:
    """The run as plain JSON-able data (times in seconds from the start of the run)."""
    lanes = layout(run)
    workers = run.workers
    index = {w: i for i, w in enumerate(workers)}
    names = groups(run)
    group_index = {g: i for i, g in enumerate(names)}
    t0 = run.start

    def rel(t: float | None) -> float:
        return round((t if t is not None else run.end) - t0, 6)

    bars = []
    for t in sorted(run.tasks.values(), key=lambda t: t.id):
        g = group_index.get(t.group, group_index.get("other", 0))
        for a in t.attempts:
            start = a.start if a.start is not None else a.dispatched
            bars.append([t.id, a.attempt, index[a.worker], a.lane, rel(start), rel(a.end), g, a.outcome])
    spans: dict[str, list[list[Any]]] = {w: [] for w in workers}
    for s in run.spans:
        spans[s.id].append([rel(s.connected), rel(s.disconnected), s.cause])
    times, series = state_series(run)
    moved = bytes_series(run)
    at, stacks = stacked_bytes(run)
    return {
        "version": 1,
        "title": title or f"kubevine run {run.workflow}",
        "workflow": run.workflow,
        "summary": summary(run),
        "start": t0,
        "duration": round(run.duration, 6),
        # the axes start here (a long manager-only lead-in is cut, as in the PNG)
        "view_from": round(view_start(run), 6),
        "workers": [{"id": w, "lanes": lanes.rows[w][1], "spans": spans[w]} for w in workers],
        "groups": [{"name": g, "colour": PALETTE[i % len(PALETTE)]} for i, g in enumerate(names)],
        "bar_fields": list(BAR_FIELDS),
        "bars": bars,
        "tasks": {"count": len(run.tasks), "by_state": run.counts()},
        "transfers": [
            [rel(tr.time), index.get(tr.dest or "", -1), tr.bytes, tr.source, tr.file, tr.ok]
            for tr in run.transfers
        ],
        "bytes_by_source": run.bytes_by_source(),
        "restarts": [rel(t) for t, _ in run.managers[1:]],
        "libraries": [
            [index[ls.worker], ls.name, rel(ls.start), rel(ls.end), ls.outcome]
            for ls in run.library_spans
            if ls.worker in index
        ],
        "states": {
            "times": [round(x, 6) for x in times],
            "series": {s: series[s] for s in TASK_STATES},
            "style": [[s, c, label] for s, c, label in STATE_STYLE],
        },
        "bytes": {
            src: {
                "x": [round(x, 6) for x in moved[src][0]],
                "y": moved[src][1],
                "colour": SOURCE_COLOURS[src],
            }
            for src in SOURCES
        },
        "bytes_stacked": {"times": [round(x, 6) for x in at], "series": stacks},
    }


def render(run: Run, path: Path, *, title: str | None = None) -> dict[str, Any]:
    """Write the page to ``path``; returns the embedded data."""
    d = data(run, title)
    blob = json.dumps(d, separators=(",", ":")).replace("</", "<\\/")
    page = (
        _PAGE.replace("@@TITLE@@", html.escape(d["title"]))
        .replace("@@SUMMARY@@", html.escape(d["summary"]))
        .replace("@@DATA@@", blob)
        .replace("@@SCRIPT@@", _SCRIPT)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return d


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 24px;color:#222}
h1{font-size:18px;margin:0 0 2px} .sub{color:#555;margin-bottom:10px}
.legend span{display:inline-block;margin:0 14px 4px 0;white-space:nowrap}
.legend i{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px;border-radius:2px}
.panels{display:flex;gap:24px;flex-wrap:wrap} .panel{flex:1 1 480px}
h2{font-size:13px;margin:14px 0 4px;font-weight:600}
svg text{font-size:11px;fill:#333} .hint{color:#777;font-size:11px}
#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #bbb;padding:4px 7px;
border-radius:3px;font-size:12px;display:none;box-shadow:0 1px 4px rgba(0,0,0,.15);white-space:pre}
</style></head><body>
<h1>@@TITLE@@</h1><div class="sub">@@SUMMARY@@</div>
<div class="legend" id="legend"></div>
<h2>tasks on workers <span class="hint">(one bar per attempt; drag to zoom, double-click for the whole run)
<span id="cut"></span></span></h2>
<div id="timeline"></div>
<div class="panels">
<div class="panel"><h2>tasks by state</h2><div id="states"></div>
<div class="legend" id="states-legend"></div></div>
<div class="panel"><h2>bytes moved to workers, by source (stacked)</h2><div id="bytes"></div>
<div class="legend" id="bytes-legend"></div></div>
</div>
<div id="tip"></div>
<script type="application/json" id="kubevine-run">@@DATA@@</script>
<script>@@SCRIPT@@</script>
</body></html>
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("kubevine-run").textContent);
  var tip = document.getElementById("tip");
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  // one SVG element as text: el("rect", {x: 1, y: 2}, body)
  function el(tag, attrs, body) {
    var a = Object.keys(attrs).map(function (k) { return " " + k + '="' + esc(attrs[k]) + '"'; });
    return "<" + tag + a.join("") + (body === undefined ? "/>" : ">" + body + "</" + tag + ">");
  }
  function svg(w, h, body) {
    return '<svg xmlns="http://www.w3.org/2000/svg" width="' + w + '" height="' + h + '">' + body + "</svg>";
  }
  function fmtBytes(n) {
    var u = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (Math.abs(n) >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + " " + u[i];
  }
  function ticks(lo, hi, n) {
    var span = Math.max(hi - lo, 1e-9), step = Math.pow(10, Math.floor(Math.log10(span / n)));
    [1, 2, 5, 10].some(function (m) {
      if (span / (step * m) <= n) { step *= m; return true; }
      return false;
    });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(9));
    return out;
  }
  function legend(node, items) {
    node.innerHTML = items.map(function (it) {
      return '<span><i style="background:' + it[1] + '"></i>' + esc(it[0]) + "</span>";
    }).join("");
  }
  function text(x, y, s, anchor, extra) {
    var a = {x: x, y: y, "text-anchor": anchor || "start"};
    Object.keys(extra || {}).forEach(function (k) { a[k] = extra[k]; });
    return el("text", a, s);
  }

  var groupItems = D.groups.map(function (g) { return [g.name, g.colour]; });
  if (D.bars.some(function (b) { return b[7] !== "success" && b[7] !== null; })) {
    groupItems.push(["failed attempt (outlined)", "#d1495b"]);
  }
  if (D.libraries.length) groupItems.push(["library starting (" + D.libraries.length + ")", "#3b3b3b"]);
  if (D.transfers.length) groupItems.push(["file transfer (" + D.transfers.length + ")", "#333"]);
  legend(document.getElementById("legend"), groupItems);

  var from = D.view_from || 0, full = [0, Math.max(D.duration, 1e-3)], view = [from, full[1]];
  if (from > 0) document.getElementById("cut").textContent =
    "; not shown at first: the first " + from.toFixed(1) + " s, when no worker or task was there yet";
  var rowH = D.workers.length > 40 ? 10 : 22, left = 190, right = 12, top = 4, axisH = 32;

  function drawTimeline() {
    var box = document.getElementById("timeline");
    var W = Math.max(600, box.clientWidth || 1100), plotW = W - left - right;
    var H = top + D.workers.length * rowH + axisH, bottom = H - axisH;
    var x = function (t) { return left + (t - view[0]) / (view[1] - view[0]) * plotW; };
    var p = [el("clipPath", {id: "clip"}, el("rect", {x: left, y: 0, width: plotW, height: H}))];
    ticks(view[0], view[1], 10).forEach(function (t) {
      p.push(el("line", {x1: x(t), x2: x(t), y1: top, y2: bottom, stroke: "#eee"}));
      p.push(text(x(t), bottom + 14, t, "middle"));
    });
    p.push(text(left + plotW / 2, H - 3, "seconds since the run started", "middle"));
    p.push('<g clip-path="url(#clip)">');
    D.workers.forEach(function (w, i) {
      w.spans.forEach(function (s) {
        var a = x(s[0]), b = x(s[1] === null ? D.duration : s[1]);
        p.push(el("rect", {x: a, y: top + i * rowH + 1, width: Math.max(b - a, 0), height: rowH - 2,
                           fill: "#f3f3f3"}));
      });
    });
    D.libraries.forEach(function (l) {
      var a = x(l[2]), what = "library " + l[1] + " starting: " + (l[3] - l[2]).toFixed(3) + "s, " +
        (l[4] || "not ready");
      p.push(el("rect", {x: a, y: top + l[0] * rowH + 1, width: Math.max(x(l[3]) - a, 1), height: 2,
                         fill: l[4] === "failed" ? "#d1495b" : "#3b3b3b"}, el("title", {}, esc(what))));
    });
    D.bars.forEach(function (b, k) {
      if (b[5] < view[0] || b[4] > view[1]) return;
      var laneH = (rowH - 4) / D.workers[b[2]].lanes, y = top + b[2] * rowH + 2 + b[3] * laneH;
      var a = x(b[4]), ok = b[7] === "success" || b[7] === null;
      var g = D.groups[b[6]] || {colour: "#bab0ac"};
      var attrs = {"data-k": k, x: a, y: y, width: Math.max(x(b[5]) - a, 1),
                   height: Math.max(laneH - 1, 1), fill: ok ? g.colour : "#fff"};
      if (!ok) attrs.stroke = "#d1495b";
      p.push(el("rect", attrs));
    });
    D.transfers.forEach(function (t) {
      if (t[1] < 0 || t[0] < view[0] || t[0] > view[1]) return;
      var cx = x(t[0]), cy = top + t[1] * rowH + rowH - 2;
      var what = t[4] + ": " + fmtBytes(t[2]) + " from " + t[3];
      var mark = "M" + (cx - 3) + "," + (cy - 5) + "h6l-3,5z";
      p.push(el("path", {d: mark, fill: "#333"}, el("title", {}, esc(what))));
    });
    D.restarts.forEach(function (t) {
      p.push(el("line", {x1: x(t), x2: x(t), y1: top, y2: bottom,
                         stroke: "#d1495b", "stroke-dasharray": "5,3"}));
      p.push(text(x(t) + 3, top + 10, "manager restart", "start", {fill: "#d1495b"}));
    });
    p.push("</g>");
    var every = rowH < 14 ? Math.ceil(14 / rowH) : 1;
    D.workers.forEach(function (w, i) {
      if (i % every) return;
      var label = w.id.length > 28 ? w.id.slice(0, 13) + "\u2026" + w.id.slice(-13) : w.id;
      p.push(text(left - 6, top + i * rowH + rowH / 2 + 4, esc(label) + el("title", {}, esc(w.id)), "end"));
    });
    p.push(el("rect", {id: "sel", y: top, height: bottom - top, width: 0, fill: "rgba(47,111,176,.15)"}));
    box.innerHTML = svg(W, H, p.join(""));
    interact(box.firstChild, plotW);
  }

  function interact(s, plotW) {
    var sel = s.querySelector("#sel"), drag = null;
    var px = function (ev) { return ev.clientX - s.getBoundingClientRect().left; };
    var tOf = function (v) { return view[0] + (v - left) / plotW * (view[1] - view[0]); };
    s.addEventListener("mousedown", function (ev) {
      drag = px(ev);
      sel.setAttribute("x", drag);
      sel.setAttribute("width", 0);
    });
    s.addEventListener("mousemove", function (ev) {
      if (drag !== null) {
        sel.setAttribute("x", Math.min(px(ev), drag));
        sel.setAttribute("width", Math.abs(px(ev) - drag));
      }
      var k = ev.target.getAttribute && ev.target.getAttribute("data-k");
      if (k === null || k === undefined) { tip.style.display = "none"; return; }
      var b = D.bars[+k];
      tip.textContent = "task " + b[0] + " (attempt " + b[1] + ")\n" + (D.groups[b[6]] || {name: "?"}).name +
        "\nworker " + D.workers[b[2]].id + "\n" + b[4].toFixed(3) + "s \u2192 " + b[5].toFixed(3) +
        "s (" + (b[5] - b[4]).toFixed(3) + "s)\n" + (b[7] || "running");
      tip.style.display = "block";
      tip.style.left = (ev.clientX + 12) + "px";
      tip.style.top = (ev.clientY + 12) + "px";
    });
    s.addEventListener("mouseleave", function () { tip.style.display = "none"; });
    s.addEventListener("mouseup", function (ev) {
      if (drag === null) return;
      var a = tOf(Math.min(drag, px(ev))), b = tOf(Math.max(drag, px(ev)));
      drag = null;
      if (b - a > (view[1] - view[0]) / 200) { view = [Math.max(a, 0), b]; drawTimeline(); }
      else sel.setAttribute("width", 0);
    });
    s.addEventListener("dblclick", function () { view = full.slice(); drawTimeline(); });
  }

  function chart(box, series, stacked, yfmt) {
    var W = Math.max(360, box.clientWidth || 520), H = 220, l = 60, r = 10, t = 8, b = 34;
    var pw = W - l - r, ph = H - t - b, xmin = from, xmax = full[1], ymax = 1;
    series.forEach(function (s) {
      s.y.forEach(function (v, i) { ymax = Math.max(ymax, v + (stacked ? s.base[i] : 0)); });
    });
    var X = function (v) { return l + (Math.max(v, xmin) - xmin) / (xmax - xmin) * pw; };
    var Y = function (v) { return t + ph - v / ymax * ph; };
    var p = [];
    ticks(0, ymax, 5).filter(function (v) { return v === Math.round(v); }).forEach(function (v) {  // counts
      p.push(el("line", {x1: l, x2: l + pw, y1: Y(v), y2: Y(v), stroke: "#eee"}));
      p.push(text(l - 4, Y(v) + 4, yfmt(v), "end"));
    });
    ticks(xmin, xmax, 6).forEach(function (v) { p.push(text(X(v), t + ph + 14, v, "middle")); });
    p.push(text(l + pw / 2, H - 3, "seconds since the run started", "middle"));
    series.forEach(function (s) {
      if (stacked) {
        var up = s.x.map(function (x, i) { return X(x) + "," + Y(s.base[i] + s.y[i]); });
        var down = s.x.map(function (x, i) { return X(x) + "," + Y(s.base[i]); }).reverse();
        p.push(el("path", {d: "M" + up.join("L") + "L" + down.join("L") + "Z", fill: s.colour},
                  el("title", {}, esc(s.name))));
      } else {
        var d = s.x.map(function (x, i) { return (i ? "H" + X(x) + "V" : "M" + X(x) + ",") + Y(s.y[i]); });
        p.push(el("path", {d: d.join(""), fill: "none", stroke: s.colour, "stroke-width": 1.8}));
      }
    });
    box.innerHTML = svg(W, H, p.join(""));
  }

  function drawPanels() {
    var st = D.states, base = st.times.map(function () { return 0; }), series = [];
    st.style.forEach(function (sty) {
      var y = st.series[sty[0]];
      if (!y.some(function (v) { return v > 0; })) return;
      series.push({name: sty[2], colour: sty[1], x: st.times, y: y, base: base.slice()});
      base = base.map(function (v, i) { return v + y[i]; });
    });
    chart(document.getElementById("states"), series, true, function (v) { return v; });
    legend(document.getElementById("states-legend"),
           series.slice().reverse().map(function (s) { return [s.name, s.colour]; }));
    var bst = D.bytes_stacked, at = [];  // cumulative steps: each value holds until the next time
    bst.times.forEach(function (x, i) { if (i) at.push(x); at.push(x); });
    var steps = function (ys) {
      var out = [];
      ys.forEach(function (v, i) { if (i) out.push(ys[i - 1]); out.push(v); });
      return out;
    };
    var under = at.map(function () { return 0; });
    var bs = Object.keys(D.bytes).map(function (k) {  // stacked: one source never hides another
      var y = steps(bst.series[k]);
      var s = {name: k, colour: D.bytes[k].colour, x: at, y: y, base: under.slice()};
      under = under.map(function (v, i) { return v + y[i]; });
      return s;
    });
    chart(document.getElementById("bytes"), bs, true, fmtBytes);
    legend(document.getElementById("bytes-legend"), bs.map(function (s) {
      return [s.name + ": " + fmtBytes(s.y[s.y.length - 1]), s.colour];
    }));
  }

  function draw() { drawTimeline(); drawPanels(); }
  window.addEventListener("resize", draw);
  draw();
})();
"""
