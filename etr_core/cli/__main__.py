"""``python -m etr_core.cli`` (and ``torchrun ... -m etr_core.cli``): the ``etr`` command."""

import sys

from etr_core.cli.command import main

sys.exit(main())
