"""`python -m lmforge ...` is the `lmforge` command, for environments without its console script."""

import sys

from lmforge.cli import main

sys.exit(main())
