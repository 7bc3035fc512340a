"""A fake of WeChat's Official Account API for tests and the demo: a real HTTP server on 127.0.0.1
(``http.server.ThreadingHTTPServer`` in a thread) that speaks the same JSON as api.weixin.qq.com.

Endpoints: ``GET /cgi-bin/token``, ``POST /cgi-bin/message/custom/send``,
``POST /cgi-bin/message/template/send``, ``POST /cgi-bin/qrcode/create``. Tokens expire after
``token_ttl`` seconds of the server's clock. The server can be told to expire or invalidate every
token, to fail the next N calls (errcode -1 or HTTP 500), to rate-limit (45009/45047) or to answer a
given errcode; it records every request (``requests``) and every message it accepted (``messages``).

    with FakeWeChatServer(accounts={"wx…": "secret"}) as fake:
        settings.SHEQUN_WECHAT_API_BASE = fake.base_url
        ...
        assert fake.messages[0]["touser"] == openid
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    answer: dict[str, Any] | None
    status: int
    at: float = field(default_factory=time.time)


class FakeWeChatServer:
    """See the module docstring. ``accounts`` maps AppID → AppSecret; ``None`` accepts any pair."""

    def __init__(self, accounts: dict[str, str] | None = None, *, token_ttl: int = 7200,
                 clock: Callable[[], float] = time.time) -> None:
        self.accounts = accounts
        self.token_ttl = token_ttl
        self.clock = clock
        self.tokens: dict[str, tuple[str, float]] = {}
        self.requests: list[Recorded] = []
        self.messages: list[dict[str, Any]] = []
        self.qrcodes: list[dict[str, Any]] = []
        self.failures: deque[tuple[str, int]] = deque()
        self.token_issued = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ----------------------------------------------------------------------------

    def start(self) -> FakeWeChatServer:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-wechat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeWeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def expire_tokens(self) -> None:
        """Every issued token is expired from now on (errcode 42001)."""
        with self._lock:
            self.tokens = {t: (app, 0.0) for t, (app, _exp) in self.tokens.items()}

    def invalidate_tokens(self) -> None:
        """Forget every issued token (errcode 40001, as after an AppSecret reset)."""
        with self._lock:
            self.tokens.clear()

    def fail_next(self, n: int, *, mode: str = "busy") -> None:
        """Fail the next ``n`` calls: ``busy`` (errcode -1), ``http500`` or ``drop`` (close the connection)."""
        if mode not in ("busy", "http500", "drop"):
            raise ValueError(mode)
        with self._lock:
            self.failures.extend([(mode, 0)] * n)

    def answer_next(self, errcode: int, n: int = 1) -> None:
        """Answer the next ``n`` API calls (not token calls) with ``errcode`` (e.g. 45009, 43004)."""
        with self._lock:
            self.failures.extend([("errcode", errcode)] * n)

    def rate_limit_next(self, n: int = 1, errcode: int = 45009) -> None:
        self.answer_next(errcode, n)

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    # -- behaviour --------------------------------------------------------------------------

    def _issue(self, query: dict[str, str]) -> dict[str, Any]:
        app_id, secret = query.get("appid", ""), query.get("secret", "")
        if query.get("grant_type") != "client_credential":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        if self.accounts is not None and self.accounts.get(app_id) != secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        token = f"FAKE_{secrets.token_urlsafe(24)}"
        with self._lock:
            self.tokens[token] = (app_id, self.clock() + self.token_ttl)
            self.token_issued += 1
        return {"access_token": token, "expires_in": self.token_ttl}

    def _check_token(self, token: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.tokens.get(token)
        if found is None:
            return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
        if found[1] <= self.clock():
            return {"errcode": 42001, "errmsg": "access_token expired"}
        return None

    def _api(self, path: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            return {"errcode": 47001, "errmsg": "data format error"}
        if path == "/cgi-bin/message/custom/send":
            msgtype = body.get("msgtype")
            if not body.get("touser") or msgtype not in ("text", "image", "news", "link", "voice", "video",
                                                         "music", "mpnews", "msgmenu", "miniprogrampage"):
                return {"errcode": 40008, "errmsg": "invalid message type"}
            if not isinstance(body.get(msgtype), dict):
                return {"errcode": 47001, "errmsg": "data format error"}
            with self._lock:
                self.messages.append(body)
            return {"errcode": 0, "errmsg": "ok"}
        if path == "/cgi-bin/message/template/send":
            if not body.get("touser") or not body.get("template_id") or not isinstance(body.get("data"), dict):
                return {"errcode": 40037, "errmsg": "invalid template_id"}
            with self._lock:
                self.messages.append(body)
                msgid = 1_000_000 + len(self.messages)
            return {"errcode": 0, "errmsg": "ok", "msgid": msgid}
        if path == "/cgi-bin/qrcode/create":
            action = body.get("action_name")
            scene = ((body.get("action_info") or {}).get("scene") or {}).get("scene_str")
            if action not in ("QR_LIMIT_STR_SCENE", "QR_STR_SCENE") or not scene:
                return {"errcode": 40097, "errmsg": "invalid args"}
            ticket = f"gQ{secrets.token_urlsafe(30)}"
            answer: dict[str, Any] = {"ticket": ticket, "url": f"http://weixin.qq.com/q/{secrets.token_urlsafe(12)}"}
            if action == "QR_STR_SCENE":
                answer["expire_seconds"] = int(body.get("expire_seconds") or 30)
            with self._lock:
                self.qrcodes.append({**body, **answer})
            return answer
        return {"errcode": 404, "errmsg": "unknown api"}

    def handle(self, method: str, raw_path: str, raw_body: bytes) -> tuple[int, dict[str, Any] | None]:
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            body: Any = json.loads(raw_body.decode("utf-8")) if raw_body else None
        except (UnicodeDecodeError, ValueError):
            body = raw_body.decode("utf-8", "replace")
        failure: tuple[str, int] | None = None
        with self._lock:
            if self.failures and (parts.path != "/cgi-bin/token" or self.failures[0][0] != "errcode"):
                failure = self.failures.popleft()
        status, answer = 200, None
        if failure is not None and failure[0] == "busy":
            answer = {"errcode": -1, "errmsg": "system error"}
        elif failure is not None and failure[0] == "http500":
            status = 500
        elif failure is not None and failure[0] == "drop":
            status = 0
        elif failure is not None:
            answer = {"errcode": failure[1], "errmsg": "fake error"}
        elif parts.path == "/cgi-bin/token" and method == "GET":
            answer = self._issue(query)
        elif method != "POST":
            status, answer = 405, None
        else:
            answer = self._check_token(query.get("access_token", "")) or self._api(parts.path, body)
        with self._lock:
            self.requests.append(Recorded(method=method, path=parts.path, query=query, body=body, answer=answer,
                                          status=status))
        return status, answer


def _make_handler(fake: FakeWeChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, answer = fake.handle(method, self.path, raw)
            if status == 0:  # drop the connection without an answer
                self.close_connection = True
                self.wfile.flush()
                self.connection.close()
                return
            payload = json.dumps(answer, ensure_ascii=False).encode("utf-8") if answer is not None else b"error"
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8" if answer is not None else "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return Handler
