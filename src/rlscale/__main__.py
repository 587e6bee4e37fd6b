"""`python -m rlscale` runs the CLI."""
import sys

from rlscale.cli import main

sys.exit(main())
