"""One error format for the whole API: ``{"error": {"code", "message", "details"}}``.

Domain errors (``ShequnError``) keep their stable ``code`` and HTTP ``status``; ninja's request
validation, authentication and HTTP errors, Django's ``Http404`` and anything unexpected are mapped
onto the same envelope. An unexpected exception is logged with its traceback and answered with a
plain ``internal_error``: nothing of the traceback reaches the client."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.http import Http404, HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from shequn.core.errors import ShequnError

if TYPE_CHECKING:
    from ninja import NinjaAPI

logger = logging.getLogger("shequn.api")

# Codes for HTTP errors raised by ninja or Django themselves (not by the domain).
HTTP_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "validation_error",
    429: "rate_limited",
}


class BadRequest(ShequnError):
    code = "bad_request"
    status = 400


def envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def install(api: NinjaAPI) -> None:
    """Register the handlers on ``api`` (the most specific class wins: ninja walks the MRO)."""

    def shequn_error(request: HttpRequest, exc: ShequnError) -> HttpResponse:
        body = exc.as_dict()
        response = api.create_response(request, envelope(body["code"], body["message"], body.get("details")),
                                       status=exc.status)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response["Retry-After"] = str(retry_after)
        return response

    def validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        return api.create_response(
            request, envelope("validation_error", _("The request is not valid: see details."), exc.errors), status=422)

    def authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        message = _("Authentication required: send 'Authorization: Bearer <API key>'.")
        return api.create_response(request, envelope("unauthorized", message), status=401)

    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        code = HTTP_STATUS_CODES.get(exc.status_code, "error")
        return api.create_response(request, envelope(code, str(exc)), status=exc.status_code)

    def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return api.create_response(request, envelope("not_found", _("Not found.")), status=404)

    def unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
        return api.create_response(request, envelope("internal_error", _("An internal error occurred.")), status=500)

    api.add_exception_handler(ShequnError, shequn_error)
    api.add_exception_handler(NinjaValidationError, validation_error)
    api.add_exception_handler(AuthenticationError, authentication_error)
    api.add_exception_handler(HttpError, http_error)
    api.add_exception_handler(Http404, not_found)
    api.add_exception_handler(Exception, unexpected)
