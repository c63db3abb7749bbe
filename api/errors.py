"""The one place where errors become HTTP: JSON `{"error": code, "message": text}` always, plus
`"file"` (the client's file name) when the refusal is about one uploaded file."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from api.multipart import FileTooLarge, TooManyFields, TooManyFiles, UploadRefused

log = logging.getLogger("kiln.api")

RETRY_AFTER = 2
"""Seconds a client is told to wait after a 503 (about one Redis timeout)."""

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_type", 503: "unavailable",
}


class ApiError(Exception):
    """Raised by handlers; becomes a JSON error response with `status` (and `file`, the name of
    the one uploaded file it is about, when given)."""

    def __init__(self, status: int, code: str, message: str, *, file: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.file = file


def not_found(what: str = "task") -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def error_response(status: int, code: str, message: str, *,
                   file: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="kiln"'} if status == 401 else None
    body = {"error": code, "message": message}
    if file is not None:
        body["file"] = file
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, file=exc.file)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _upload_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UploadRefused)
    status = 413 if isinstance(exc, FileTooLarge | TooManyFiles | TooManyFields) else 400
    return error_response(status, exc.code, exc.message, file=exc.file)


def retry_later(status: int, code: str, message: str, retry_after: int) -> JSONResponse:
    """A refusal that says when to try again, in the body and in Retry-After."""
    return JSONResponse({"error": code, "message": message, "retry_after": retry_after},
                        status_code=status, headers={"Retry-After": str(retry_after)})


def unavailable_response(retry_after: int = RETRY_AFTER) -> JSONResponse:
    """503 `unavailable`: Redis is down, stalled or full; the client may retry after a while."""
    response = error_response(503, "unavailable", "the service's store is unavailable; try again")
    response.headers["Retry-After"] = str(retry_after)
    return response


async def _redis_down(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable during %s %s: %s", request.method, request.url.path,
                type(exc).__name__)
    return unavailable_response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "something went wrong on our side")


EXCEPTION_HANDLERS: dict[type[Exception] | int, ExceptionHandler] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    UploadRefused: _upload_refused,
    RedisError: _redis_down,
    ConnectionError: _redis_down,
    Exception: _unexpected,
}
