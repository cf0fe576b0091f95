"""``python -m esper_func`` runs the command line."""

import sys

from esper_func.cli import main

sys.exit(main())
