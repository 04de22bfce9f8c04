"""Test harnesses that stand in for things a test machine does not have (a kube-apiserver)."""
