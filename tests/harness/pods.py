"""What kube-apiserver (v1.30) does to a Pod on create: decode, admission defaults, defaulting, validation.

Covers the fields a collector pod uses (containers with command/args/env/securityContext, nodeName,
hostNetwork, tolerations, restartPolicy, activeDeadlineSeconds, automountServiceAccountToken,
labels, generateName); errors are worded as the real server words them (400 for JSON of the wrong
type, 422 ``Invalid`` with field causes). Not modelled: the rest of PodSpec's validation, Pod Security
admission, ServiceAccount existence, LimitRanges and quotas.
"""

from __future__ import annotations

import copy
import re
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from tests.harness.wire import ApiStatus, FieldError, Object, bad_request, invalid, now_rfc3339

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
             "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
# generateName's suffix alphabet (k8s.io/apimachinery/pkg/util/rand: no vowels, no confusable digits)
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

# (JSON path, Go struct field as encoding/json names it, Go type, expected JSON type)
_TYPES: list[tuple[str, str, str, str]] = [
    ("metadata", "Pod.metadata", "v1.ObjectMeta", "object"),
    ("metadata.name", "ObjectMeta.metadata.name", "string", "string"),
    ("metadata.generateName", "ObjectMeta.metadata.generateName", "string", "string"),
    ("metadata.labels", "ObjectMeta.metadata.labels", "map[string]string", "object"),
    ("metadata.annotations", "ObjectMeta.metadata.annotations", "map[string]string", "object"),
    ("spec", "Pod.spec", "v1.PodSpec", "object"),
    ("spec.containers", "PodSpec.spec.containers", "[]v1.Container", "array"),
    ("spec.nodeName", "PodSpec.spec.nodeName", "string", "string"),
    ("spec.hostNetwork", "PodSpec.spec.hostNetwork", "bool", "boolean"),
    ("spec.hostPID", "PodSpec.spec.hostPID", "bool", "boolean"),
    ("spec.restartPolicy", "PodSpec.spec.restartPolicy", "v1.RestartPolicy", "string"),
    ("spec.activeDeadlineSeconds", "PodSpec.spec.activeDeadlineSeconds", "int64", "integer"),
    ("spec.terminationGracePeriodSeconds", "PodSpec.spec.terminationGracePeriodSeconds", "int64", "integer"),
    ("spec.automountServiceAccountToken", "PodSpec.spec.automountServiceAccountToken", "bool", "boolean"),
    ("spec.tolerations", "PodSpec.spec.tolerations", "[]v1.Toleration", "array"),
    ("spec.serviceAccountName", "PodSpec.spec.serviceAccountName", "string", "string"),
]
_CONTAINER_TYPES: list[tuple[str, str, str]] = [
    ("name", "string", "string"),
    ("image", "string", "string"),
    ("command", "[]string", "array"),
    ("args", "[]string", "array"),
    ("env", "[]v1.EnvVar", "array"),
    ("securityContext", "v1.SecurityContext", "object"),
    ("ports", "[]v1.ContainerPort", "array"),
    ("imagePullPolicy", "v1.PullPolicy", "string"),
]


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value: Any, want: str) -> bool:
    if value is None:
        return True  # JSON null leaves a Go field at its zero value
    return {"object": isinstance(value, dict), "array": isinstance(value, list),
            "string": isinstance(value, str), "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool)}[want]


def _unmarshal_error(value: Any, struct_field: str, go_type: str) -> ApiStatus:
    return bad_request(f'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal {_json_type(value)} '
                       f"into Go struct field {struct_field} of type {go_type}")


def decode(body: Any) -> Object:
    """Check the JSON types the way Go's decoder would fail on them (400 BadRequest)."""
    if not isinstance(body, dict):
        raise bad_request('Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal '
                          f"{_json_type(body)} into Go value of type struct {{ APIVersion string "
                          '"json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }')
    kind, version = body.get("kind", "Pod"), body.get("apiVersion", "v1")
    if kind != "Pod" or version != "v1":
        raise bad_request(f"the object provided is unrecognized ({kind}/{version}) for the pods endpoint")
    for path, struct_field, go_type, want in _TYPES:
        cur: Any = body
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if not _type_ok(cur, want):
            raise _unmarshal_error(cur, struct_field, go_type)
    for c in body.get("spec", {}).get("containers") or []:
        if not isinstance(c, dict):
            raise _unmarshal_error(c, "PodSpec.spec.containers", "v1.Container")
        for key, go_type, want in _CONTAINER_TYPES:
            if not _type_ok(c.get(key), want):
                raise _unmarshal_error(c.get(key), f"Container.spec.containers.{key}", go_type)
        for key in ("command", "args"):
            for item in c.get(key) or []:
                if not isinstance(item, str):
                    raise _unmarshal_error(item, f"Container.spec.containers.{key}", "string")
    for labels in (body.get("metadata", {}).get("labels") or {}, body.get("metadata", {}).get("annotations") or {}):
        for v in labels.values():
            if not isinstance(v, str):
                raise _unmarshal_error(v, "ObjectMeta.metadata.labels", "string")
    return body


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in image:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _tolerates(tolerations: list[Object], key: str, effect: str) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, "", effect):
            continue
        if (t.get("key") or "") == "" and t.get("operator") == "Exists":
            return True
        if t.get("key") == key:
            return True
    return False


def default_pod(body: Object, namespace: str, rv: str, random: Callable[[int], str] | None = None) -> Object:
    """The stored Pod: admission plugins' and defaulting's additions (uid, timestamps, tolerations, volumes...)."""
    rand = random or (lambda n: "".join(secrets.choice(_ALPHANUMS) for _ in range(n)))
    pod: Object = copy.deepcopy(body)
    pod["kind"], pod["apiVersion"] = "Pod", "v1"
    meta = pod.setdefault("metadata", None) or {}
    pod["metadata"] = meta
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = meta["generateName"] + rand(5)
    meta["namespace"] = namespace
    meta["uid"] = str(uuid.uuid4())
    meta["resourceVersion"] = rv
    meta["creationTimestamp"] = now_rfc3339()
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "generation"):
        meta.pop(key, None)
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = sa
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not _tolerates(tolerations, key, "NoExecute"):  # DefaultTolerationSeconds admission
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    automount = spec.get("automountServiceAccountToken") is not False
    volume_name = f"kube-api-access-{rand(5)}"
    if automount:  # ServiceAccount admission: the projected token volume
        spec.setdefault("volumes", []).append({"name": volume_name, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
    for c in spec.get("containers") or []:
        c.setdefault("resources", {})
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("imagePullPolicy", _image_pull_policy(str(c.get("image", ""))))
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")
            if spec.get("hostNetwork"):
                p.setdefault("hostPort", p.get("containerPort"))
        if automount:
            c.setdefault("volumeMounts", []).append({"name": volume_name, "readOnly": True, "mountPath": SA_MOUNT})
    pod["status"] = {"phase": "Pending", "qosClass": _qos(spec.get("containers") or [])}
    return pod


def _qos(containers: list[Object]) -> str:
    res = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in res):
        return "BestEffort"
    guaranteed = all(
        set(r.get("limits") or {}) >= {"cpu", "memory"}
        and all((r.get("requests") or {}).get(k, v) == v for k, v in (r.get("limits") or {}).items())
        for r in res)
    return "Guaranteed" if guaranteed else "Burstable"


def validate(pod: Object) -> None:
    """ValidatePodCreate for the fields listed in the module docstring; raises 422 Invalid."""
    errs: list[FieldError] = []
    meta, spec = pod["metadata"], pod["spec"]
    name = meta.get("name") or ""
    if not name:
        errs.append(FieldError("Required", "metadata.name", detail="name or generateName is required"))
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        errs.append(FieldError("Invalid", "metadata.name", name, SUBDOMAIN_MSG))
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, short = key.rpartition("/")
        if len(short) > 63 or not _QUALIFIED_NAME.match(short) or (prefix and not _DNS1123_SUBDOMAIN.match(prefix)):
            errs.append(FieldError("Invalid", "metadata.labels", key,
                                   "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                                   "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
                                   "or '123-abc', regex used for validation is "
                                   "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"))
        if len(value) > 63:
            errs.append(FieldError("Invalid", "metadata.labels", value, "must be no more than 63 characters"))
        elif not _LABEL_VALUE.match(value):
            errs.append(FieldError("Invalid", "metadata.labels", value, LABEL_VALUE_MSG))
    containers = spec.get("containers") or []
    if not containers:
        errs.append(FieldError("Required", "spec.containers"))
    seen: set[str] = set()
    for i, c in enumerate(containers):
        where = f"spec.containers[{i}]"
        cname = c.get("name") or ""
        if not cname:
            errs.append(FieldError("Required", f"{where}.name"))
        elif len(cname) > 63 or not _DNS1123_LABEL.match(cname):
            errs.append(FieldError("Invalid", f"{where}.name", cname, LABEL_MSG))
        elif cname in seen:
            errs.append(FieldError("Duplicate", f"{where}.name", cname))
        seen.add(cname)
        if not c.get("image"):
            errs.append(FieldError("Required", f"{where}.image"))
        if c.get("imagePullPolicy") not in ("Always", "IfNotPresent", "Never"):
            errs.append(FieldError("NotSupported", f"{where}.imagePullPolicy", c.get("imagePullPolicy"),
                                   'supported values: "Always", "IfNotPresent", "Never"'))
        for j, p in enumerate(c.get("ports") or []):
            if spec.get("hostNetwork") and p.get("hostPort") != p.get("containerPort"):
                errs.append(FieldError("Invalid", f"{where}.ports[{j}].hostPort", p.get("hostPort"),
                                       "must match `containerPort` when `hostNetwork` is true"))
    if spec.get("restartPolicy") not in ("Always", "OnFailure", "Never"):
        errs.append(FieldError("NotSupported", "spec.restartPolicy", spec.get("restartPolicy"),
                               'supported values: "Always", "OnFailure", "Never"'))
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and not 1 <= ads <= 2147483647:
        errs.append(FieldError("Invalid", "spec.activeDeadlineSeconds", ads,
                               "must be between 1 and 2147483647, inclusive"))
    node = spec.get("nodeName")
    if node and not _DNS1123_SUBDOMAIN.match(node):
        errs.append(FieldError("Invalid", "spec.nodeName", node, SUBDOMAIN_MSG))
    for i, t in enumerate(spec.get("tolerations") or []):
        where = f"spec.tolerations[{i}]"
        op = t.get("operator") or "Equal"
        if op not in ("Equal", "Exists"):
            errs.append(FieldError("NotSupported", f"{where}.operator", op, 'supported values: "Equal", "Exists"'))
        elif op == "Exists" and t.get("value"):
            errs.append(FieldError("Invalid", f"{where}.operator", op,
                                   "value must be empty when `operator` is 'Exists'"))
        elif op == "Equal" and not t.get("key"):
            errs.append(FieldError("Invalid", f"{where}.operator", op,
                                   "operator must be Exists when `key` is empty, which means \"match all values "
                                   'and all keys"'))
        effect = t.get("effect") or ""
        if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            errs.append(FieldError("NotSupported", f"{where}.effect", effect,
                                   'supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"'))
        elif t.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.append(FieldError("Invalid", f"{where}.effect", effect,
                                   "effect must be 'NoExecute' when `tolerationSeconds` is set"))
    if errs:
        raise invalid("Pod", name, errs)
