"""What the API answers instead of a result: one exception base, turned into JSON by `api.api_view`.

Every error a client can cause, and every failure of a dependency that the
API reports, is an ApiError (or a subclass naming a domain case): a status,
a code the client can act on, a message a person can read, and optionally
Retry-After and the session it concerns. Nothing else reaches the client.
"""

import uuid

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

StrOrPromise = str | Promise


class ApiError(Exception):
    status = 400
    code = "bad_request"
    # What a subclass says unless told otherwise, in the request's language when it is raised.
    default_message: StrOrPromise = _("The request could not be understood.")
    retry_after: int | None = None

    def __init__(
        self,
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
        *,
        session_id: uuid.UUID | None = None,
        retry_after: int | None = None,
    ):
        self.status = status or type(self).status
        self.code = code or type(self).code
        self.message: str = str(message or self.default_message)
        self.session_id = session_id
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(self.message)


class TurnInProgress(ApiError):
    """Another request is answering this conversation's latest question right now."""

    status = 409
    code = "turn_in_progress"
    default_message = _("The previous message in this conversation is still being answered.")
    retry_after = 2


class RetrySuperseded(ApiError):
    """A retry of a question that can no longer be answered: newer messages followed it.
    No Retry-After: retrying it again will never work."""

    status = 409
    code = "retry_superseded"
    default_message = _("Newer messages followed that one; send it again as a new message.")


class ConversationDeleted(ApiError):
    """The conversation was deleted (by its customer, or a purge) while its turn was answered."""

    status = 404
    code = "session_not_found"
    default_message = _("This conversation was deleted while it was being answered.")


class DatabaseUnavailable(ApiError):
    """The database failed (connection lost, failover, a statement or lock timeout) and one
    retry on a fresh connection failed too."""

    status = 503
    code = "database_unavailable"
    default_message = _("We could not reach our database just now; please try again in a moment.")
    retry_after = 2
