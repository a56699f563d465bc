"""Errors that reach users, each with its HTTP status and OpenAI error type.

Engines raise these from ``load``/``generate`` so that a bad request becomes a
4xx the client can act on instead of a 500 it retries.
"""

from __future__ import annotations


class XinfError(Exception):
    """Base class: an error with a status, an OpenAI ``type``, ``param`` and ``code``."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_dict(self) -> dict[str, object]:
        return {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }


class InvalidRequest(XinfError):
    """The request is malformed or asks for something this model cannot do (400)."""

    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus max_tokens) does not fit the model's context (400)."""

    def __init__(self, message: str, *, param: str | None = "messages"):
        super().__init__(message, param=param, code="context_length_exceeded")


class AuthenticationError(XinfError):
    status = 401
    type = "authentication_error"


class PermissionDenied(XinfError):
    status = 403
    type = "permission_error"


class NotFound(XinfError):
    status = 404
    type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = "not_found"):
        super().__init__(message, param=param, code=code)


class Conflict(XinfError):
    status = 409
    type = "invalid_request_error"


class PayloadTooLarge(XinfError):
    status = 413
    type = "invalid_request_error"


class Overloaded(XinfError):
    """Too many requests queued for a model (429); retry after ``retry_after`` seconds."""

    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message, code="overloaded")
        self.retry_after = retry_after


class Unavailable(XinfError):
    """No replica can take the request right now (503)."""

    status = 503
    type = "server_error"


class HubUnavailable(XinfError):
    """A model hub could not be reached or kept failing (502): not the client's fault."""

    status = 502
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = "hub_unavailable"):
        super().__init__(message, param=param, code=code)


class LaunchError(XinfError):
    """A model could not be launched; the message says why (log tail included)."""

    status = 400
    type = "invalid_request_error"


class EngineError(XinfError):
    """The engine failed while serving a request (500): a bug or a crash."""


def from_dict(status: int, data: dict[str, object]) -> XinfError:
    """Rebuild an error that crossed a process boundary."""
    cls = _BY_STATUS.get(status, XinfError)
    err = cls.__new__(cls)
    XinfError.__init__(
        err,
        str(data.get("message", "")),
        param=data.get("param"),  # type: ignore[arg-type]
        code=data.get("code"),  # type: ignore[arg-type]
    )
    err.status = status
    err.type = str(data.get("type") or cls.type)
    if isinstance(err, Overloaded):
        err.retry_after = 1
    return err


_BY_STATUS: dict[int, type[XinfError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: Overloaded,
    502: HubUnavailable,
    503: Unavailable,
}
