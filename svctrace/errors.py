"""The few exceptions svctrace raises for user-facing problems.

Every error carries a one-line message and a next step (``hint``); the cli turns them into
``svctrace: error: <message>`` plus the hint, and an exit status, without a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # errors.py stays import-free at run time: every layer imports it
    from svctrace.model.k8s import Service


class SvctraceError(Exception):
    """A problem the user can act on: a one-line message and a next step."""

    exit_code = 2
    notes: tuple[str, ...] = ()  # what else the user should know, said after the next step

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SvctraceError):
    """The command line asks for something that cannot be done as asked."""


class InputError(SvctraceError):
    """A file or dump given to svctrace cannot be read; names the file and, if known, the line."""

    def __init__(self, message: str, hint: str | None = None, *, path: str | None = None,
                 line: int | None = None) -> None:
        where = path or ""
        if path and line is not None:
            where = f"{path}:{line}"
        super().__init__(f"{where}: {message}" if where else message, hint)
        self.path = path
        self.line = line


class NotFoundError(SvctraceError):
    """A Service (or other named object) does not exist where it was looked for."""


class NamedNotFoundError(NotFoundError):
    """A namespaced object is not where it was looked for; carries the namespace and name asked for."""

    def __init__(self, message: str, hint: str | None = None, *, namespace: str, name: str) -> None:
        super().__init__(message, hint)
        self.namespace = namespace
        self.name = name


class ServiceNotFoundError(NamedNotFoundError):
    """No Service of this name in this namespace; the hint names close names or the namespace that has one."""


class PortNotFoundError(NotFoundError):
    """The Service has no port of that name or number (nor a NodePort with that number)."""

    def __init__(self, message: str, hint: str | None = None, *, service: Service, port: str) -> None:
        super().__init__(message, hint)
        self.service = service
        self.port = port  # as the user wrote it: a port name, a port number or a NodePort number


class PodNotFoundError(NamedNotFoundError):
    """No pod of this name in this namespace (e.g. the client of ``--from-pod``)."""


class NotCollectedError(NotFoundError):
    """The answer needs an input the source does not hold (e.g. the Kubernetes objects of a node-only snapshot),
    so the object asked for is unknown rather than absent."""

    def __init__(self, message: str, hint: str | None = None, *, what: str) -> None:
        super().__init__(message, hint)
        self.what = what  # the input that was not collected, in the user's words ("Kubernetes objects (api/)")


class CollectionError(SvctraceError):
    """Collecting from a live source failed (API, node, kernel module)."""


class KubeconfigError(CollectionError):
    """No usable kubeconfig (none found, no such context, no current-context) and no in-cluster account."""


class ApiUnreachableError(CollectionError):
    """The API server did not answer: refused, timed out, closed the connection or failed TLS."""


class AuthError(CollectionError):
    """The API server rejected the credentials (401 Unauthorized)."""


class ForbiddenError(CollectionError):
    """RBAC refused a request svctrace cannot do without (403); names the verb, resource and rule."""

    def __init__(self, message: str, hint: str | None = None, *, verb: str = "", resource: str = "",
                 group: str = "", namespace: str | None = None) -> None:
        super().__init__(message, hint)
        self.verb = verb
        self.resource = resource
        self.group = group
        self.namespace = namespace
