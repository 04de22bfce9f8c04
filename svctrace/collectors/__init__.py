"""Collectors: the edge. Only this package talks to the API, netlink, the kernel's tables or runs programs."""
