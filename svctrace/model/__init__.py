"""svctrace's data model: frozen dataclasses, standard library only."""
