"""svctrace: inspect and explain the Kubernetes Service dataplane on a node."""

__version__ = "0.1.0"
