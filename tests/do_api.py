"""DigitalOcean's `GET /v2/account` on loopback, answered as DigitalOcean answers it, for the program's first read.

The program reads the account itself before any provider call (`components/account.py`
`read_account`); this server stands where `digitalocean:apiEndpoint` points in the tests,
under mocks and under the real CLI alike. Its answers and error bodies are DigitalOcean's
(API reference, `account_get`; 401 `{"id": "Unauthorized", "message": "Unable to authenticate
you"}`), with a `request_id` and the rate-limit headers every answer carries.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: The token the server accepts; any other is answered 401.
TOKEN = "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
ACCOUNT_EMAIL = "ops@example.org"

#: What DigitalOcean answers for each refusal the tests ask for: its status, error id and message.
REFUSALS: dict[int, tuple[str, str]] = {
    401: ("Unauthorized", "Unable to authenticate you"),
    403: ("Forbidden", "You do not have access for the attempted action."),
    429: ("too_many_requests", "API Rate limit exceeded."),
    500: ("server_error", "Server was unable to give you a response."),
}


@dataclass
class AccountAnswer:
    """What the account read answers: the account's address and whether it is verified, or a refusal."""

    email: str = ACCOUNT_EMAIL
    email_verified: bool = True
    status: int = 200
    """200 for the account; another status answers with DigitalOcean's error body for it."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        answer = self.server.answer
        if self.path != "/v2/account":
            self._send(404, {"id": "not_found", "message": "The resource you were accessing could not be found."})
        elif self.headers.get("Authorization") != f"Bearer {self.server.token}" and self.server.token is not None:
            self._error(401)
        elif answer.status != 200:
            self._error(answer.status)
        else:
            account = {
                "droplet_limit": 10,
                "floating_ip_limit": 3,
                "volume_limit": 100,
                "email": answer.email,
                "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
                "email_verified": answer.email_verified,
                "status": "active",
                "status_message": "",
                "team": {"uuid": "5df3e3004a17e242b7c20ca6c9fc25b701a47ece", "name": "My Team"},
            }
            self._send(200, {"account": account})

    def _error(self, status: int) -> None:
        error_id, message = REFUSALS[status]
        self._send(status, {"id": error_id, "message": message})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        request_id = str(uuid.uuid4())
        if status >= 400:
            body = {**body, "request_id": request_id}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", request_id)
        self.send_header("ratelimit-limit", "5000")
        self.send_header("ratelimit-remaining", "0" if status == 429 else "4999")
        self.send_header("ratelimit-reset", "1767225600")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests look at what the program prints."""


class _Server(ThreadingHTTPServer):
    answer = AccountAnswer()
    token: str | None = TOKEN
    """The token it accepts; None: any (a user's own, in a test that cannot know it)."""


@contextmanager
def serving(token: str | None = TOKEN) -> Iterator[_Server]:
    """The account's server on 127.0.0.1, on a port of its own, until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.token = token
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def endpoint(server: _Server) -> str:
    """The server's address as `digitalocean:apiEndpoint` takes it."""
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"
