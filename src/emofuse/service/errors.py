"""The one error shape of the service: an HTTP status and one line naming the problem.

Every answer that is not a success carries the JSON body ``{"error": "<one line>"}``. Client
mistakes get a 4xx status; a service that is busy or still loading answers 503 with a
``Retry-After`` header. :class:`ServiceError` is how the service's own code says so; the app
also maps :class:`~emofuse.errors.InputError` to 422 and :class:`~emofuse.errors.ConfigError` to
400.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An answer other than success.

    Args:
        status: The HTTP status (4xx for the client's mistakes, 503 for a busy service).
        message: One line naming the problem, phrased so the client can act on it.
        retry_after: Seconds for the ``Retry-After`` header (503s and 429s), if any.
    """

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())  # one line
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After``)."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


def busy(what: str, retry_after: int = 2) -> ServiceError:
    """A 503 saying what is full, with ``Retry-After``."""
    return ServiceError(503, f"the service is busy ({what}); retry later", retry_after)


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


__all__ = ["ServiceError", "busy", "one_line"]
