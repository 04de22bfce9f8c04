"""The check catalog, one module per area; importing this package registers every check."""

from svctrace.diagnosis.checks import api, dataplane, node  # noqa: F401
