"""Loopback HTTP servers for the network-policy tests: each records every request it receives, so a test can
assert that a refused or redirected call never arrived. Only ever bound to 127.0.0.1."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    body: bytes


@dataclass
class RecordingServer:
    """GET/POST anything. A path in `redirects` answers 302 to its URL; any other answers 200 with
    `{"items": [{"id": 1}]}` (records for an http source). `seen` lists every request, in order."""

    redirects: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.seen.append(Seen(self.command, self.path, self.rfile.read(length) if length else b""))
                target = recorder.redirects.get(self.path.split("?", 1)[0])
                body = b"" if target else json.dumps({"items": [{"id": 1}]}).encode()
                self.send_response(302 if target else 200)
                if target:
                    self.send_header("Location", target)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
