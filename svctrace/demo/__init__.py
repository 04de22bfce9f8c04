"""The bundled demo snapshot: the tutorial cluster (k8s-service-tutorial.md)."""
