"""`python -m sync`: the administrator's command line (sync/cli.py)."""
import sys

from .cli import main

sys.exit(main())
