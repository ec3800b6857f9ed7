"""A local HTTP server on 127.0.0.1 for the sources tests: serves fixture feeds that can
change between polls, honours (and records) conditional requests, and misbehaves on demand
(status codes, Retry-After, redirect loops, hanging, wrong content types)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sources"
LAST_MODIFIED = "Mon, 03 Mar 2025 17:00:00 GMT"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/rss+xml"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    validators: bool = True  # send ETag / Last-Modified and answer 304 when they match
    hang: bool = False  # accept the request and never answer
    redirect_to: str | None = None
    gzip: bool = False


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    at: float
    status: int


class FeedServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                # a client that gives up early (size cap, timeout) is part of the tests
                with contextlib.suppress(ConnectionError):
                    server.handle(self)

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # every source connects at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set(self, path: str, route: Route) -> None:
        with self.lock:
            self.routes[path] = route

    def requests(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        with self.lock:
            route = self.routes.get(request.path.split("?")[0])
        headers = {k.lower(): v for k, v in request.headers.items()}
        status = 404 if route is None else route.status
        etag = f'"{hashlib.sha1(route.body).hexdigest()[:16]}"' if route else ""
        if route is not None and route.validators and headers.get("if-none-match") == etag:
            status = 304
        if route is not None and route.redirect_to:
            status = 302
        with self.lock:
            self.seen.append(Seen(request.path, headers, time.monotonic(), status))
        if route is not None and route.hang:
            self.closing.wait(60)
            return
        if route is None or status in (302, 304) or status >= 400:
            request.send_response(status)
            if route is not None and status == 302:
                request.send_header("Location", route.redirect_to or "/")
            for key, value in (route.headers if route else {}).items():
                request.send_header(key, value)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        body = gzip.compress(route.body) if route.gzip else route.body
        request.send_response(status)
        request.send_header("Content-Type", route.content_type)
        request.send_header("Content-Length", str(len(body)))
        if route.gzip:
            request.send_header("Content-Encoding", "gzip")
        if route.validators:
            request.send_header("ETag", etag)
            request.send_header("Last-Modified", LAST_MODIFIED)
        for key, value in route.headers.items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
