"""``emotrack report``: registered through the ``emotrack.commands`` entry-point group."""

from __future__ import annotations

import argparse

from realtime.report.errors import ReportError


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``emotrack`` parser."""
    report = commands.add_parser(
        "report",
        help="turn a session's results into an HTML page (and a PNG timeline)",
        description="Write one self-contained HTML page (opens with no network) of a session: "
        "a per-speaker emotion timeline, polarity and intensity over time, the transcript, a "
        "summary per speaker and the session's metadata. INPUT is a JSON lines file written by "
        "the jsonl sink, or a folder written by --record (the page can then play the audio "
        "from any utterance). Missing folders of the outputs are made; an output that names the "
        "input (or one of a recording's files) or the other output is refused.",
    )
    report.add_argument("input", metavar="INPUT", help="JSON lines file or --record folder")
    report.add_argument(
        "-o",
        "--output",
        default="report.html",
        metavar="FILE",
        help="the HTML page to write (default %(default)s)",
    )
    report.add_argument("--png", metavar="FILE", help="also write the timeline as a PNG")
    report.add_argument(
        "--session",
        metavar="ID",
        help="the session to report on when the file holds several (default: the last one)",
    )
    report.set_defaults(handler=cmd_report, user_errors=user_errors)


def user_errors() -> tuple[type[BaseException], ...]:
    return (ReportError,)


def cmd_report(args: argparse.Namespace) -> int:
    from realtime.report import write_report

    path = write_report(args.input, args.output, args.png, session=args.session)
    print(f"emotrack: report written to {path}")
    if args.png:
        print(f"emotrack: timeline written to {args.png}")
    return 0
