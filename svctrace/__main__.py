"""``python -m svctrace``."""

from svctrace.cli import main

main()
