import sys

from cityedge.cli import main

sys.exit(main())
