"""Whether a session's outputs would overwrite its inputs or each other: checked by
:func:`realtime.cli.commands.build_config` before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

from realtime.config import Config, ConfigError


def report_path(args: argparse.Namespace, config: Config) -> str | None:
    """Where the session report goes: ``--report``; for ``live``, else the recording's
    ``report.html``."""
    report: str | None = getattr(args, "report", None)
    if report is not None or not config.record.dir:
        return report
    if not getattr(args, "report_in_recording", False):
        return None
    return str(Path(config.record.dir) / "report.html")


def check_paths(args: argparse.Namespace, config: Config) -> None:
    """Refuse (:class:`ConfigError`) an output that names the same file as an input or as
    another output: writing it would destroy that file (every command that builds its
    configuration with :func:`build_config` is checked)."""
    from unimse.output_paths import same_file

    inputs = _input_paths(args, config)
    outputs = _output_paths(args, config)
    for i, (what, path) in enumerate(outputs):
        for other_what, other in inputs:
            if same_file(path, other):
                raise ConfigError(
                    f"{what} {path} and {other_what} {other} name the same file (the output "
                    "would overwrite it: choose another path)"
                )
        for other_what, other in outputs[:i]:
            if same_file(path, other):
                raise ConfigError(
                    f"{what} {path} and {other_what} {other} name the same file (give each "
                    "output its own path)"
                )


def _input_paths(args: argparse.Namespace, config: Config) -> list[tuple[str, str]]:
    """The files a session reads, each with the option that names it."""
    from realtime.recorder import AUDIO, MANIFEST, RESULTS, VIDEO

    inputs: list[tuple[str, str]] = []
    media = getattr(args, "path", None)
    if media:
        inputs.append(("the input", str(media)))
        if Path(media).expanduser().is_dir():  # a recorded session: its files are the input
            inputs += [
                ("the input", str(Path(media) / f)) for f in (AUDIO, VIDEO, RESULTS, MANIFEST)
            ]
    if getattr(args, "config", None):
        inputs.append(("--config", str(args.config)))
    camera = config.sources.camera
    if camera is not None and not camera.strip().isdigit():
        inputs.append(("--camera", camera))
    inputs += [("--enroll", spec.partition("=")[2]) for spec in config.speakers.enroll]
    mqtt = config.sinks.mqtt
    for flag, file in (
        ("--mqtt-password-file", mqtt.password_file),
        ("--mqtt-ca-file", mqtt.tls_ca_file),
        ("--mqtt-cert-file", mqtt.tls_cert_file),
        ("--mqtt-key-file", mqtt.tls_key_file),
    ):
        if file is not None:
            inputs.append((flag, str(file)))
    return inputs


def _output_paths(args: argparse.Namespace, config: Config) -> list[tuple[str, str]]:
    """The files a session writes, each with the option that names it."""
    from realtime.recorder import AUDIO, MANIFEST, RESULTS, VIDEO
    from realtime.sinks.jsonl import STDOUT

    outputs: list[tuple[str, str]] = []
    jsonl = config.sinks.jsonl.path
    if "jsonl" in config.sinks.enabled and jsonl is not None and jsonl != STDOUT:
        outputs.append(("--output", jsonl))
    if config.record.dir:
        folder = Path(config.record.dir)
        outputs.append(("--record", str(folder)))
        outputs += [("the recording's", str(folder / f)) for f in (AUDIO, VIDEO, RESULTS, MANIFEST)]
    report = report_path(args, config)
    if report is not None:
        outputs.append(("--report" if getattr(args, "report", None) else "the report", report))
    if getattr(args, "log_file", None):  # made at the first line logged
        outputs.append(("--log-file", str(args.log_file)))
    return outputs
