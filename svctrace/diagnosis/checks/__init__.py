"""The check catalog, one module per subject; importing this package registers every check.

``ORDER`` is the order the checks run in, which is the order findings of one severity are shown: what the
target names and selects, the Service's ports, its endpoints, names, policies, then this node's rules and
settings. A new check adds its code here too (tests/unit/test_checks_catalog.py fails until it does).
"""

from svctrace.diagnosis.checks import (  # noqa: F401
    dataplane,
    dns,
    endpoints,
    node,
    policy,
    ports,
    selection,
)

# The subjects whose checks read only the API objects (the rest read this node's rules and settings).
API_SUBJECTS = frozenset({"selection", "ports", "endpoints", "dns", "policy"})

ORDER: tuple[str, ...] = (
    "service-not-found",  # selection
    "port-not-defined",  # ports
    "selector-matches-no-pods",  # selection
    "target-port-not-exposed",  # ports
    "protocol-mismatch",  # ports
    "selectorless-without-endpoints",  # endpoints
    "no-ready-endpoints",  # endpoints
    "only-terminating-endpoints",  # endpoints
    "headless-no-ready-pods",  # endpoints
    "external-name-unresolvable",  # dns
    "load-balancer-pending",  # ports
    "cluster-dns-no-endpoints",  # dns
    "cluster-domain-mismatch",  # dns
    "external-traffic-policy-local-no-local-endpoints",  # policy
    "internal-traffic-policy-local-no-local-endpoints",  # policy
    "network-policy-denies",  # policy
    "dataplane-missing-service",  # dataplane
    "nodeport-not-programmed",  # dataplane
    "source-range-blocks-client",  # dataplane
    "dataplane-stale-endpoints",  # dataplane
    "stale-udp-conntrack",  # dataplane
    "iptables-backend-split",  # node
    "proxy-mode-leftovers",  # node
    "ip-forward-disabled",  # node
    "bridge-nf-call-iptables-disabled",  # node
    "route-localnet-disabled",  # node
)
