"""Scale of ``emotrack report``: an 8-hour session (10,000 results) to one HTML page.

    python benchmarks/report_scale.py [--results SAMPLE.jsonl] [--work DIR] [--runs 3]
                                      [--results-count 10000] [--hours 8] [--no-browser] [--json]

The session is synthesised from the bundled sample's real results (``--results``; by default the
sample is replayed once with ``emotrack replay realtime/samples/conversation.flac --speed max``):
the sample's results are copied end to end, each copy's times scaled so that the copies fill
``--hours`` with ``--results-count`` results (sequence numbers, times and timestamps rewritten;
texts, speakers and predictions as the model gave them).

Measured: ``write_report`` wall time (median of ``--runs``, in this process, after the first run
paid for the imports) and the file size; the PNG's time; then, in headless Chromium (Selenium),
the time from navigation until every chart is drawn (the page's ready marker), and the time the
page takes to answer, each until the next frame: selecting an utterance (what a click on the
timeline or the transcript does: highlight, text, a time marker on every chart), a real mouse
click on the intensity chart (Selenium's pointer, until the selection changed), a hover on the
intensity chart, a zoom of the intensity chart to ten minutes (which zooms every chart), and a
scroll of the transcript. Also the ``emotrack report`` command's wall time in a new process.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realtime.report.assets import ROW_PX  # noqa: E402
from realtime.report.browser import (  # noqa: E402
    chromium_missing,
    console_errors,
    headless_chromium,
    open_report,
)
from realtime.report.build import write_report  # noqa: E402
from realtime.serialize import to_json, utc_timestamp  # noqa: E402

SAMPLE = ROOT / "realtime" / "samples" / "conversation.flac"
GAP_S = 1.5  # pause between two copies of the sample, before scaling

# Each snippet ends with done(milliseconds from the action's start to the next frame).
_NEXT_FRAME = (
    "requestAnimationFrame(function () {"
    " setTimeout(function () { done(performance.now() - t0); }, 0); });"
)
SELECT = f"""var done = arguments[arguments.length - 1], i = arguments[0];
var t0 = performance.now(); window.emotrackReport.select(i, true); {_NEXT_FRAME}"""
HOVER = f"""var done = arguments[arguments.length - 1], i = arguments[0];
var gd = document.getElementById('intensity-chart');
var t0 = performance.now();
Plotly.Fx.hover(gd, [{{curveNumber: 0, pointNumber: i}}]); {_NEXT_FRAME}"""
ZOOM = f"""var done = arguments[arguments.length - 1], start = arguments[0];
var gd = document.getElementById('intensity-chart');
var z = parseFloat(document.body.dataset.timeZero), t0 = performance.now();
Plotly.relayout(gd, {{'xaxis.range': [z + start * 1000, z + (start + 600) * 1000]}})
  .then(function () {{ {_NEXT_FRAME} }});"""
SCROLL = f"""var done = arguments[arguments.length - 1], i = arguments[0];
var view = document.getElementById('rows-view'), t0 = performance.now();
view.scrollTop = i * {ROW_PX}; view.dispatchEvent(new Event('scroll'));
requestAnimationFrame(function () {{ requestAnimationFrame(function () {{
  setTimeout(function () {{ done(performance.now() - t0); }}, 0); }}); }});"""
WATCH = """window.__picked = null;
new MutationObserver(function () { window.__picked = performance.now(); })
  .observe(document.getElementById('selection'), {attributes: true, childList: true});
return performance.now();"""


def sample_results(path: Path | None, work: Path) -> list[dict[str, Any]]:
    if path is None:
        path = work / "sample.jsonl"
        if not path.exists():
            print(f"replaying {SAMPLE.name} once for its results ...", file=sys.stderr)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "realtime",
                    "-q",
                    "replay",
                    str(SAMPLE),
                    "--speed",
                    "max",
                    "--sink",
                    "jsonl",
                    "--output",
                    str(path),
                    "--channels-as-speakers",
                    "--speakers",
                    "Maya,Tom",
                ],
                check=True,
            )
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def synthesise(base: list[dict[str, Any]], count: int, hours: float) -> list[dict[str, Any]]:
    """``count`` results filling ``hours``: copies of ``base``, times shifted and scaled."""
    copies = math.ceil(count / len(base))
    period = hours * 3600.0 / copies
    scale = period / (max(r["end"] for r in base) + GAP_S)
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    out: list[dict[str, Any]] = []
    for k in range(copies):
        for r in base:
            if len(out) == count:
                return out
            start = round(k * period + r["start"] * scale, 3)
            end = round(k * period + r["end"] * scale, 3)
            out.append(
                {
                    **r,
                    "session": "eight-hours",
                    "seq": len(out),
                    "utterance_seq": len(out),
                    "start": start,
                    "end": end,
                    "timestamp": utc_timestamp(t0 + timedelta(seconds=end + 1.0)),
                }
            )
    return out


def browser_numbers(page: Path, count: int, repeats: int = 5) -> dict[str, Any]:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with headless_chromium(1400, 1000) as driver:
        driver.set_script_timeout(60)
        ready = open_report(driver, page, timeout=120)  # the first load: nothing cached
        nav = driver.execute_script(
            "var n = performance.getEntriesByType('navigation')[0];"
            "return [n.domContentLoadedEventEnd, n.loadEventEnd];"
        )
        again = [open_report(driver, page, timeout=120) for _ in range(2)]  # Plotly's code cached
        picks = [count // 2 + 37 * k for k in range(repeats)]
        select = [driver.execute_async_script(SELECT, i) for i in picks]
        hover = [driver.execute_async_script(HOVER, i // 2) for i in picks]
        zoom = [driver.execute_async_script(ZOOM, 3600.0 * (k + 1)) for k in range(repeats)]
        scroll = [driver.execute_async_script(SCROLL, i) for i in picks]
        driver.execute_script("Plotly.relayout('intensity-chart', {'xaxis.autorange': true});")
        chart = driver.find_element(By.CSS_SELECTOR, "#intensity-chart .nsewdrag")
        clicks = []
        for k in range(repeats):
            t0 = driver.execute_script(WATCH)
            ActionChains(driver, duration=0).move_to_element_with_offset(
                chart, -300 + 150 * k, 0
            ).click().perform()
            picked = None
            for _ in range(200):
                picked = driver.execute_script("return window.__picked")
                if picked is not None:
                    break
                time.sleep(0.01)
            if picked is not None:
                clicks.append(picked - t0)
        errors = console_errors(driver)
        rows = len(driver.find_elements(By.CSS_SELECTOR, "#transcript li"))
    return {
        "ready_ms": ready,
        "ready_again_ms": again,
        "dom_content_loaded_ms": nav[0],
        "load_event_ms": nav[1],
        "select_ms": select,
        "hover_ms": hover,
        "zoom_ms": zoom,
        "scroll_ms": scroll,
        "mouse_click_ms": clicks,
        "transcript_rows": rows,
        "console_errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, help="JSON lines of the bundled sample's replay")
    parser.add_argument("--work", type=Path, help="folder for the files (default: a temporary one)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results-count", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="report-scale-"))
    work.mkdir(parents=True, exist_ok=True)

    results = synthesise(sample_results(args.results, work), args.results_count, args.hours)
    session = work / "eight-hours.jsonl"
    session.write_text("".join(to_json(r) + "\n" for r in results), encoding="utf-8")
    page, png = work / "eight-hours.html", work / "eight-hours.png"
    times = []
    for _ in range(args.runs):
        began = time.perf_counter()
        write_report(session, page)
        times.append(time.perf_counter() - began)
    began = time.perf_counter()
    write_report(session, page, png)
    png_s = time.perf_counter() - began - statistics.median(times)
    began = time.perf_counter()  # the command as a user runs it: a new process, imports included
    subprocess.run(
        [sys.executable, "-m", "realtime", "-q", "report", str(session), "-o", str(page)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    command_s = time.perf_counter() - began
    numbers: dict[str, Any] = {
        "results": len(results),
        "hours": args.hours,
        "input_mb": session.stat().st_size / 1e6,
        "write_report_s": times,
        "write_report_median_s": statistics.median(times),
        "html_mb": page.stat().st_size / 1e6,
        "png_extra_s": png_s,
        "command_s": command_s,
        "png_kb": png.stat().st_size / 1e3,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {platform.processor() or '?'}, load {_load()}",
    }
    if not args.no_browser:
        reason = chromium_missing()
        numbers["browser"] = {"skipped": reason} if reason else browser_numbers(page, len(results))
    if args.json:
        print(json.dumps(numbers, indent=2))
    else:
        _print(numbers)
    print(f"files in {work}", file=sys.stderr)
    return 0


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f} ms, max {max(values):.0f} ms" if values else "-"


def _print(n: dict[str, Any]) -> None:
    print(f"{n['results']} results over {n['hours']:g} h ({n['input_mb']:.1f} MB of JSON lines)")
    runs = ", ".join(f"{t:.2f}" for t in n["write_report_s"])
    print(f"write_report: median {n['write_report_median_s']:.2f} s ({runs})")
    print(f"HTML: {n['html_mb']:.2f} MB; PNG: +{n['png_extra_s']:.2f} s, {n['png_kb']:.0f} KB")
    print(f"emotrack report (new process, imports included): {n['command_s']:.2f} s")
    b = n.get("browser")
    if b and "skipped" not in b:
        print(
            f"browser: charts drawn {b['ready_ms']:.0f} ms after navigation "
            f"(DOMContentLoaded {b['dom_content_loaded_ms']:.0f} ms, "
            f"load {b['load_event_ms']:.0f} ms); loaded again: "
            + ", ".join(f"{t:.0f} ms" for t in b["ready_again_ms"])
        )
        print(f"  select an utterance: {_ms(b['select_ms'])}")
        print(f"  mouse click on the intensity chart: {_ms(b['mouse_click_ms'])}")
        print(f"  hover on the intensity chart: {_ms(b['hover_ms'])}")
        print(f"  zoom to 10 minutes (all charts): {_ms(b['zoom_ms'])}")
        print(f"  scroll the transcript to another hour: {_ms(b['scroll_ms'])}")
        print(
            f"  transcript rows in the page {b['transcript_rows']}, "
            f"console errors {len(b['console_errors'])}"
        )
    elif b:
        print(f"browser: skipped ({b['skipped']})")
    print(f"machine: {n['machine']}, Python {n['python']}")


if __name__ == "__main__":
    raise SystemExit(main())
