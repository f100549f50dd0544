"""``python -m worldmodel`` runs the CLI (also what ``torchrun -m worldmodel train`` uses)."""

import sys

from worldmodel.cli import main

sys.exit(main())
