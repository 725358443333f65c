"""``python -m localmem``: the CLI."""

from localmem.cli import main

main()
