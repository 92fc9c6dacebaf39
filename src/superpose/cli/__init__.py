"""The command line: thin wrappers that parse flags, call one library function and print a summary.

* `main`: every command and the entry point `superpose`.
* `analysis`: `superpose analyze`, `report` and `gates`.
"""
from superpose.cli.main import main

__all__ = ["main"]
