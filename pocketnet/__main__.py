"""``python -m pocketnet`` = the ``pocketnet`` command."""

from pocketnet.cli import main

main()
