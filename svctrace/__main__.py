"""``python -m svctrace``."""

from svctrace.cli.app import main

main()
