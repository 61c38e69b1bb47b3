"""The one exception family of HybridFlow.

HybridFlowError
 ├── ConfigError            bad configuration (exit code 2)
 ├── SecretKeyMissing       an operation needs HYBRIDFLOW_SECRET_KEY (exit code 2)
 ├── BadRequest             400: a request we cannot act on (not JSON, no event/instance)
 │    └── AmbiguousChat     a typed phone number matches several chats
 ├── AuthenticationFailed   401: webhook or admin credentials do not match
 ├── Forbidden              403: an endpoint that is disabled by configuration
 ├── NotFound               404
 │    ├── UnknownInstance   no tenant for this Evolution instance
 │    └── UnknownSession    no session for this tenant + chat
 ├── Conflict               409: e.g. adding a tenant that exists
 ├── PayloadTooLarge        413
 ├── DatabaseMissing        a command that only reads found no database (exit code 2)
 ├── Unavailable            503: a transient failure of ours (database down); Evolution retries
 ├── BackupFailed           ``hybridflow backup`` could not make a copy it can vouch for
 ├── SendError              a call to Evolution failed (``transient`` says whether to retry)
 └── LLMError               the model failed (``transient`` says whether to retry)

Each class carries the HTTP status the web layer answers and the exit code the CLI uses.
"""

from __future__ import annotations


class HybridFlowError(Exception):
    """Base of every error HybridFlow raises on purpose."""

    status: int = 500
    exit_code: int = 1
    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(HybridFlowError):
    status = 500
    exit_code = 2
    code = "config_error"


class SecretKeyMissing(HybridFlowError):
    exit_code = 2
    code = "secret_key_missing"


class BadRequest(HybridFlowError):
    status = 400
    exit_code = 2
    code = "bad_request"


class AuthenticationFailed(HybridFlowError):
    status = 401
    code = "unauthorized"


class Forbidden(HybridFlowError):
    status = 403
    code = "forbidden"


class NotFound(HybridFlowError):
    status = 404
    code = "not_found"


class UnknownInstance(NotFound):
    code = "unknown_instance"


class UnknownSession(NotFound):
    code = "unknown_session"


class Conflict(HybridFlowError):
    status = 409
    code = "conflict"


class PayloadTooLarge(HybridFlowError):
    status = 413
    code = "payload_too_large"


class DatabaseMissing(HybridFlowError):
    status = 503
    exit_code = 2
    code = "database_missing"


class Unavailable(HybridFlowError):
    status = 503
    code = "unavailable"


class BackupFailed(HybridFlowError):
    """The copy could not be written or failed its check; nothing was left at the path asked for."""

    code = "backup_failed"


class _PeerError(HybridFlowError):
    """A failure talking to a peer; ``transient`` errors are retried, others fail the reply."""

    status = 502

    def __init__(self, message: str, *, transient: bool, http_status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.http_status = http_status


class SendError(_PeerError):
    code = "send_error"


class LLMError(_PeerError):
    """``unreachable``: the model server refused the connection (it is down), as opposed to failing one answer."""

    code = "llm_error"

    def __init__(self, message: str, *, transient: bool, http_status: int | None = None,
                 unreachable: bool = False) -> None:
        super().__init__(message, transient=transient, http_status=http_status)
        self.unreachable = unreachable


class AmbiguousChat(BadRequest):
    """A chat typed by a person (a phone number) matches several chats of the tenant: the message lists them."""

    code = "ambiguous_chat"
