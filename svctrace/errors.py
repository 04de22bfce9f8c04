"""The few exceptions svctrace raises for user-facing problems.

Every error carries a one-line message and a next step (``hint``); the cli turns them into
``svctrace: error: <message>`` plus the hint, and an exit status, without a traceback.
"""

from __future__ import annotations


class SvctraceError(Exception):
    """A problem the user can act on: a one-line message and a next step."""

    exit_code = 2

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
