"""The page's stylesheet and glue script (inlined: the page opens with no network).

The script connects what Plotly draws: a click on a bar or point selects its utterance (shows its
text, highlights it in the transcript, marks its time on every chart, and offers to play the
recording from there); zooming one chart zooms them all.

It also draws the transcript from the page's ``#transcript-data`` JSON, only the rows in view
(rows have a fixed height): ten thousand rows laid out at once take the browser many seconds, and
every layout Plotly forces (on each mouse press) would pay for them again.

When every chart is drawn (``<body data-plots>`` says how many) and the transcript is shown, it
sets ``data-ready`` on ``<body>`` and ``emotrackReport.readyAt`` (``performance.now()``).
"""

from __future__ import annotations

ROW_PX = 46  # height of a transcript row

STYLE = f"""
:root {{ --muted: #666; --line: #ddd; --pick: #fff3c4; }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #222; background: #fafafa; }}
header {{ padding: 12px 20px; background: #fff; border-bottom: 1px solid var(--line); }}
header h1 {{ margin: 0; font-size: 20px; }}
header p {{ margin: 2px 0 0; color: var(--muted); }}
h2 {{ font-size: 15px; margin: 0 0 6px; }}
main {{ display: grid; grid-template-columns: minmax(0, 1fr) 440px; gap: 16px;
  padding: 16px 20px; }}
section, aside {{ background: #fff; border: 1px solid var(--line); border-radius: 6px;
  padding: 10px; min-width: 0; }}
.hint {{ color: var(--muted); }}
.lane {{ border-bottom: 1px solid #f0f0f0; }}
#selection {{ margin-top: 8px; padding: 8px; min-height: 64px; background: #f6f6f6;
  border-radius: 4px; }}
#selection q {{ display: block; font-size: 16px; margin-top: 4px; quotes: none; }}
#selection button {{ margin-top: 6px; }}
audio {{ width: 100%; margin-top: 8px; }}
#rows-view {{ overflow-y: auto; max-height: 78vh; contain: strict; height: var(--rows-height); }}
#rows {{ list-style: none; margin: 0; padding: 0; position: relative; }}
#rows li {{ position: absolute; left: 0; right: 0; height: {ROW_PX}px; padding: 3px 6px;
  border-bottom: 1px solid #f0f0f0; cursor: pointer; overflow: hidden; }}
#rows li:hover {{ background: #f4f8ff; }}
#rows li.picked {{ background: var(--pick); }}
#rows q {{ display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
  quotes: none; }}
time {{ color: var(--muted); font-variant-numeric: tabular-nums; }}
.spk {{ font-weight: 600; }}
.emo {{ display: inline-block; padding: 0 5px; border-radius: 3px; font-size: 12px; }}
.pol {{ font-size: 12px; font-variant-numeric: tabular-nums; }}
.below {{ display: grid; grid-template-columns: 1fr 1fr; gap: 16px; padding: 0 20px 20px; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 3px 8px; border-bottom: 1px solid #eee; }}
td.n, th.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.all td {{ font-weight: 600; border-top: 2px solid var(--line); }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0 0 10px; }}
dt {{ color: var(--muted); }}
dd {{ margin: 0; overflow-wrap: anywhere; }}
@media (max-width: 1000px) {{ main, .below {{ grid-template-columns: 1fr; }} }}
"""

SCRIPT = """
(function () {
  "use strict";
  var ROW = ROW_PX, OVERSCAN = 8;
  var R = window.emotrackReport = { plots: [], readyAt: null, selected: null, data: null };
  var syncing = false, shown = [-1, -1], view = null, list = null;

  function clock(seconds) {
    var s = Math.max(0, Math.floor(seconds)), h = Math.floor(s / 3600);
    var m = Math.floor(s / 60) % 60, pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return (h ? h + ":" : "") + pad(m) + ":" + pad(s % 60);
  }

  function span(cls, text) {
    var el = document.createElement("span");
    el.className = cls;
    el.textContent = text;
    return el;
  }

  // The parts of utterance i: time, speaker, emotion and confidence, polarity, text.
  function parts(i) {
    var D = R.data, e = D.emotions[D.emotion[i]], p = D.polarities[D.polarity[i]];
    var time = document.createElement("time");
    time.textContent = clock(D.start[i]);
    var q = document.createElement("q");
    q.textContent = D.text[i] || "(no words)";
    var intensity = (D.intensity[i] >= 0 ? "+" : "") + D.intensity[i].toFixed(1);
    return [time, span("spk s" + D.speaker[i], D.speakers[D.speaker[i]]),
            span("emo e-" + e, e + " " + Math.round(D.confidence[i] * 100) + "%"),
            span("pol p-" + p, p + " " + intensity), q];
  }

  function row(i) {
    var li = document.createElement("li"), bits = parts(i), head = document.createElement("div");
    li.id = "u" + i;
    li.dataset.index = String(i);
    li.dataset.start = String(R.data.start[i]);
    li.style.top = (i * ROW) + "px";
    if (i === R.selected) { li.className = "picked"; }
    bits.slice(0, 4).forEach(function (b) { head.append(b, " "); });
    bits[4].title = R.data.text[i];
    li.append(head, bits[4]);
    return li;
  }

  function renderRows() {
    var n = R.data.start.length;
    var first = Math.max(0, Math.floor(view.scrollTop / ROW) - OVERSCAN);
    var last = Math.min(n, Math.ceil((view.scrollTop + view.clientHeight) / ROW) + OVERSCAN);
    if (first === shown[0] && last === shown[1]) { return; }
    shown = [first, last];
    var rows = [];
    for (var i = first; i < last; i++) { rows.push(row(i)); }
    list.replaceChildren.apply(list, rows);
  }

  function markTime(seconds) {
    var x = parseFloat(document.body.dataset.timeZero) + seconds * 1000;
    var shape = { type: "line", xref: "x", yref: "paper", x0: x, x1: x,
                  y0: 0, y1: 1, line: { color: "#222", width: 1.5, dash: "dot" } };
    R.plots.forEach(function (gd) { Plotly.relayout(gd, { shapes: [shape] }); });
  }

  R.select = function (index, fromChart) {
    var D = R.data;
    if (!D || !(index >= 0 && index < D.start.length)) { return; }
    R.selected = index;
    var top = index * ROW;
    if (fromChart && (top < view.scrollTop || top + ROW > view.scrollTop + view.clientHeight)) {
      view.scrollTop = top - view.clientHeight / 2;
    }
    shown = [-1, -1];
    renderRows();
    var start = D.start[index], box = document.getElementById("selection");
    box.replaceChildren();
    parts(index).forEach(function (b) { box.append(b, " "); });
    box.firstChild.textContent = clock(start) + "\\u2013" + clock(D.end[index]);
    box.dataset.index = String(index);
    var audio = document.getElementById("audio");
    if (audio) {
      var play = document.createElement("button");
      play.type = "button";
      play.id = "play";
      play.textContent = "\\u25B6 Play from " + clock(start);
      play.addEventListener("click", function () {
        audio.currentTime = start;
        var p = audio.play();
        if (p && p.catch) {
          p.catch(function (err) { play.textContent = "cannot play: " + err.message; });
        }
      });
      box.appendChild(play);
    }
    markTime(start);
  };

  function onRelayout(source, event) {
    // Plotly emits plotly_relayout for the charts this function relayouts too: ignore those.
    if (syncing) { return; }
    var update = {};
    if ("xaxis.range[0]" in event) {
      update["xaxis.range"] = [event["xaxis.range[0]"], event["xaxis.range[1]"]];
    } else if ("xaxis.range" in event) {
      update["xaxis.range"] = event["xaxis.range"];
    } else if ("xaxis.autorange" in event) {
      update["xaxis.autorange"] = true;
    } else {
      return;
    }
    syncing = true;
    var done = function () { syncing = false; };
    Promise.all(R.plots.filter(function (gd) { return gd !== source; })
      .map(function (gd) { return Plotly.relayout(gd, update); })).then(done, done);
  }

  function maybeReady() {
    if (R.data && R.plots.length === parseInt(document.body.dataset.plots, 10)) {
      R.readyAt = performance.now();
      document.body.dataset.ready = "true";
    }
  }

  R.attach = function (id) {
    var gd = document.getElementById(id);
    gd.on("plotly_click", function (event) {
      var point = event.points[0];
      var index = Array.isArray(point.customdata) ? point.customdata[0] : point.customdata;
      if (index >= 0) { R.select(index, true); }
    });
    gd.on("plotly_relayout", function (event) { onRelayout(gd, event); });
    R.plots.push(gd);
    maybeReady();
  };

  document.addEventListener("DOMContentLoaded", function () {
    R.data = JSON.parse(document.getElementById("transcript-data").textContent);
    view = document.getElementById("rows-view");
    list = document.getElementById("rows");
    var height = R.data.start.length * ROW;
    list.style.height = height + "px";
    view.style.setProperty("--rows-height", height + "px");
    var pending = false;
    view.addEventListener("scroll", function () {
      if (!pending) {
        pending = true;
        requestAnimationFrame(function () { pending = false; renderRows(); });
      }
    });
    list.addEventListener("click", function (event) {
      var li = event.target.closest("li[data-index]");
      if (li) { R.select(parseInt(li.dataset.index, 10), false); }
    });
    renderRows();
    maybeReady();
  });
})();
""".replace("ROW_PX", str(ROW_PX))
