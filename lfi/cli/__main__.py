"""`python -m lfi.cli` (used by torchrun for sharded extraction)."""

import sys

from lfi.cli import main

sys.exit(main())
