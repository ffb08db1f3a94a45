"""``emotrack report``: a session's results as one self-contained HTML page and a PNG.

Modules, one job each: :mod:`~realtime.report.load` reads and checks the input (a JSON lines
file or a ``--record`` folder), :mod:`~realtime.report.summary` the per-speaker summary and
latency percentiles, :mod:`~realtime.report.timeline` the numbers behind the charts,
:mod:`~realtime.report.figures` the Plotly figures, :mod:`~realtime.report.png` the matplotlib
PNG, :mod:`~realtime.report.audio` the recording's player source, :mod:`~realtime.report.page`
the HTML document, :mod:`~realtime.report.build` ties them together, and
:mod:`~realtime.report.cli` registers the subcommand.

Other commands (``replay --report``, ``live --record``) call :func:`write_report`. Importing this
package stays cheap: Plotly and matplotlib are imported when a report is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from realtime.report.errors import ReportError

if TYPE_CHECKING:
    from realtime.report.build import write_report

__all__ = ["ReportError", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "write_report":  # imported on first use: it brings Plotly
        from realtime.report.build import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
