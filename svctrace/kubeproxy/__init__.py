"""kube-proxy's own conventions (chain naming, marks), written down once."""
