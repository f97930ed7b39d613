import sys

from mlpacker_runtime.cli import main

sys.exit(main())
