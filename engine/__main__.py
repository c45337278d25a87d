"""``python -m engine`` runs the ``crosswalk`` command line."""

from engine.cli import main

main()
