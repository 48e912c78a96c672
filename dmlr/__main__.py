"""``python -m dmlr``: the command line."""

from dmlr.cli import main

main()
