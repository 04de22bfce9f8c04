"""The collector pod svctrace asks for, and how it reads the cluster's answers about it (pure).

One pod per node read by ``--collect`` (svctrace/collectors/remote.py): pinned to the node by ``nodeName``
(no scheduler, so a cordoned node is still read), on the node's network (``hostNetwork``: its rules, its
/proc/net), tolerating every taint, never restarted, with no service account token (it talks to nothing),
only NET_ADMIN and NET_RAW (what iptables-save, nft and ipset need to read; ``--privileged`` for nodes whose
policy wants more), a read-only root filesystem, and an ``activeDeadlineSeconds`` so that it ends by itself
even if svctrace is killed. Its only process sleeps until that deadline; the read is exec'd into it. The
read-only script rides in its environment, so ``kubectl get pod -o yaml`` shows exactly what runs.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from svctrace.errors import CollectionError

NAME_LABEL = "app.kubernetes.io/name"
COLLECTOR = "svctrace-collector"
RUN_LABEL = "svctrace.io/run"
NODE_ANNOTATION = "svctrace.io/node"
CONTAINER = "collect"
SCRIPT_ENV = "SVCTRACE_READ"
SELECTOR = f"{NAME_LABEL}={COLLECTOR}"
KUBE_PROXY = ("kube-system", "kube-proxy")  # the DaemonSet whose image is the default collector image

# What --collect needs in the collector namespace: its pods (create, delete; get and list to follow them and find
# an earlier run's), exec into them, and events (why a pod stays Pending).
ROLE_YAML = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: svctrace-collect
  namespace: {namespace}
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "delete", "get", "list"]
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["create", "get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
"""


class NodeReadError(CollectionError):
    """One node could not be read (the others can still be)."""

    def __init__(self, node: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.node = node


def size_words(n: int) -> str:
    """A byte count in words: "1 GiB", "44 MiB"."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"


def role_yaml(namespace: str) -> str:
    """The Role ``--collect`` needs in the collector namespace (README shows the same)."""
    return ROLE_YAML.format(namespace=namespace)


def pod_name(node: str, run_id: str) -> str:
    """``svctrace-<node>-<run>``: readable in ``kubectl get pods``, unique per run."""
    stem = node[:40].rstrip(".-")
    return f"svctrace-{stem}-{run_id}"


def collector_pod(node: str, run_id: str, image: str, *, privileged: bool, deadline: int,
                  read_script: str) -> dict[str, Any]:
    """The collector pod for one node (see the module docstring for why each field is what it is)."""
    security: dict[str, Any] = {"readOnlyRootFilesystem": True, "runAsUser": 0}
    if privileged:
        security["privileged"] = True
    else:
        security["allowPrivilegeEscalation"] = False
        security["capabilities"] = {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(node, run_id),
            "labels": {NAME_LABEL: COLLECTOR, RUN_LABEL: run_id},
            "annotations": {NODE_ANNOTATION: node,
                            "svctrace.io/purpose": "reads this node's Service rules once, read-only; "
                                                   "svctrace deletes it when done"},
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": True,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "tolerations": [{"operator": "Exists"}],
            "activeDeadlineSeconds": deadline,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", str(deadline)],
                "env": [{"name": SCRIPT_ENV, "value": read_script}],
                "securityContext": security,
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            }],
        },
    }


def node_ready(node: dict[str, Any]) -> tuple[bool, str]:
    """Whether a Node is Ready, and its Ready condition in words when not."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return True, ""
            reason = cond.get("reason") or ""
            message = (cond.get("message") or "").rstrip(".")
            return False, f"Ready={cond.get('status')}" + (f", {reason}" if reason else "") + \
                (f": {message}" if message else "")
    return False, "no Ready condition"


def handshake_status(reason: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and Status body of a refused exec handshake (the client words it as text)."""
    found = re.search(r"Handshake status (\d+)", reason)
    body: dict[str, Any] = {}
    start = reason.rfind("-+-+- ")
    if start >= 0:
        with contextlib.suppress(ValueError):
            doc = json.loads(reason[start + 6:])
            body = doc if isinstance(doc, dict) else {}
    return (int(found.group(1)) if found else 0), body
