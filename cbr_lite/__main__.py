"""``python -m cbr_lite`` runs the command line."""

import sys

from cbr_lite.cli import main

sys.exit(main())
