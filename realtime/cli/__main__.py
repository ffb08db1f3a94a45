"""``python -m realtime.cli`` is the ``emotrack`` command."""

import sys

from realtime.cli import main

sys.exit(main())
