import sys

from croma.cli import main

sys.exit(main())
