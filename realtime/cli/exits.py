"""Exit codes of the ``emotrack`` command: what a script can learn from ``$?``.

Shown in ``emotrack --help`` (:data:`EPILOG`) and in the README. When several apply, the first
in this order wins: 130, 4, 3.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNDELIVERED = 3
EXIT_INPUT_FAILED = 4
EXIT_INTERRUPTED = 130

EPILOG = """\
exit codes:
  0    finished: the whole input was processed and every result delivered
  1    internal error (a bug; the traceback says where)
  2    usage or input error, found before any processing: bad option or configuration,
       unreadable or damaged media (checked before the models load), unreachable broker
  3    finished, but results were not delivered: a sink failed, dropped results, or MQTT
       could not deliver them all (unsent or dropped)
  4    the input failed mid-stream (damaged media; speech detection fell too far behind
       the microphone): every result of the audio read before the failure was delivered
  130  interrupted by SIGINT (Ctrl-C) or SIGTERM: capture stopped, and what was already
       captured was processed and delivered (a second signal aborts at once, also 130);
       `serve` is stopped this way as a service is: it ends its sessions and exits 0
when several apply: 130 before 4 before 3.
"""
