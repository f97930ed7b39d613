"""``python -m tests.testbed up|down|status|inventory|build-image``."""

import sys

from tests.testbed.testbed import main

sys.exit(main())
