"""``python -m ltx2_edge`` is the ``ltx2-edge`` command."""

import sys

from ltx2_edge.cli import main

sys.exit(main())
