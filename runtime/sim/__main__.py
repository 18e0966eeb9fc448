"""``python -m runtime.sim``: the simulator's commands (see :mod:`runtime.sim.cli`)."""

import sys

from runtime.sim.cli import main

sys.exit(main())
