"""``python -m fastslow``: the command line (so ``torchrun ... -m fastslow fit ...`` runs it on every rank)."""

import sys

from fastslow.cli import main

sys.exit(main())
