"""``python -m hiresdiff …`` runs the command line."""

import sys

from hiresdiff.cli import main

sys.exit(main())
