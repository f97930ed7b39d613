"""``python -m mlpacker``: the same as the ``mlpacker`` command."""

import sys

from mlpacker.cli import main

sys.exit(main())
