"""The command line: thin wrappers that parse flags, call one library function and print a summary.

* `commands`: every command and the entry point `main` (`superpose`).
* `analysis`: `superpose analyze`, `report` and `gates`.
"""
from superpose.cli.commands import main

__all__ = ["main"]
