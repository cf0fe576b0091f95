"""``python -m esper_func`` runs the command line."""

import sys

try:
    from esper_func.cli import main
except KeyboardInterrupt:  # interrupted while importing torch: nothing was started
    print("esper-func: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
