"""The REST API, mounted at /api/: version 1 under /api/v1/, the OpenAPI document at
/api/openapi.json and the interactive documentation at /api/docs (served from local static files)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import URLPattern, URLResolver
from django.utils.translation import gettext as _
from ninja import NinjaAPI, Router
from ninja.renderers import JSONRenderer

from . import (
    bots,
    catalog,
    channels,
    engagement,
    errors,
    inbox,
    interactions,
    lifecycle,
    loyalty,
    members,
    offers,
    outbound,
    ratelimit,
    recommend,
    workspace,
)
from .auth import api_key_auth, session_auth

DESCRIPTION = """\
Members, interactions, the lifecycle pipeline and touchpoints of one workspace.

Authenticate with a workspace API key: `Authorization: Bearer sq_…`. Every error has the form
`{"error": {"code": "...", "message": "...", "details": ...}}`. Lists are pages
`{"items": [...], "next": <cursor or null>}`: pass `next` back as `?after=`. See docs/api.md.
"""


class Utf8JSONRenderer(JSONRenderer):
    """JSON with Chinese text as UTF-8 rather than \\u escapes."""

    json_dumps_params = {"ensure_ascii": False}


class ShequnAPI(NinjaAPI):
    """NinjaAPI whose every answer carries the rate-limit headers and whose 405s use the error format."""

    def create_temporal_response(self, request: HttpRequest) -> HttpResponse:
        response = super().create_temporal_response(request)
        ratelimit.add_headers(request, response)
        return response

    def create_response(self, request: HttpRequest, data: Any, *, status: int | None = None,
                        temporal_response: HttpResponse | None = None) -> HttpResponse:
        response = super().create_response(request, data, status=status, temporal_response=temporal_response)
        ratelimit.add_headers(request, response)
        return response

    def _get_urls(self) -> list[URLPattern | URLResolver]:
        urls = super()._get_urls()
        for pattern in urls:
            if isinstance(pattern, URLPattern):
                pattern.callback = _json_method_not_allowed(pattern.callback)
        return urls


def _json_method_not_allowed(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if response.status_code == 405 and not response.get("Content-Type", "").startswith("application/json"):
            body = errors.envelope("method_not_allowed", _("Method %(method)s is not allowed here.")
                                   % {"method": request.method}, {"allowed": response.get("Allow", "")})
            answer = HttpResponse(json.dumps(body, ensure_ascii=False), status=405,
                                  content_type="application/json; charset=utf-8")
            answer["Allow"] = response.get("Allow", "")
            return answer
        return response

    return wrapper


api = ShequnAPI(
    title="Shequn API",
    version="1",
    description=DESCRIPTION,
    auth=[api_key_auth, session_auth],
    renderer=Utf8JSONRenderer(),
    urls_namespace="api",
)
errors.install(api)

for _router in (workspace.router, members.router, members.merge_router, catalog.router, interactions.router,
                interactions.touchpoint_router, lifecycle.router, workspace.keys_router, *loyalty.routers,
                *engagement.routers, *offers.routers, *channels.routers, *bots.routers, *inbox.routers,
                *outbound.routers, *recommend.routers):
    api.add_router("/v1", _router)

# Last: any other path under /api/ answers 404 in the error format.
fallback = Router(auth=None)


@fallback.api_operation(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"], "/{path:rest}",
                        include_in_schema=False, operation_id="not_found")
def not_found(request: HttpRequest, rest: str) -> HttpResponse:
    return api.create_response(request, errors.envelope("not_found", _("No such API endpoint.")), status=404)


api.add_router("", fallback)
