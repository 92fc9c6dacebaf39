"""`python -m superpose ...` runs the command line (also what `accelerate launch -m superpose` needs)."""
import sys

from superpose.cli.commands import main

sys.exit(main())
