"""Throwaway servers for connection tests: a PostgreSQL cluster that checks passwords (scram-sha-256,
unlike the trust-auth server the other tests use), a moto S3/Secrets Manager server, a small HTTP API.

The cluster uses the Debian postgresql package's binaries (/usr/lib/postgresql/<version>/bin); as root it
runs them as the `postgres` user (initdb refuses root)."""

from __future__ import annotations

import base64
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(f"no {name} under /usr/lib/postgresql/*/bin: install the Debian postgresql package")
    return found[-1]


@dataclass
class ScramCluster:
    """A PostgreSQL cluster on 127.0.0.1:<port> whose superuser `postgres` has `password`."""

    directory: Path
    port: int
    password: str
    _as_postgres: list[str]

    @classmethod
    def start(cls, password: str) -> ScramCluster:
        directory = Path(tempfile.mkdtemp(prefix="pgscram-"))
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_postgres:
            shutil.chown(directory, "postgres", "postgres")
        pwfile = directory / "pw"
        pwfile.write_text(password + "\n")
        if as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        data = directory / "data"
        port = free_port()
        cluster = cls(directory, port, password, as_postgres)
        try:
            cluster._run(
                _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8",
            )  # fmt: skip
            cluster.resume()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def resume(self) -> None:
        """Start the server (again, after halt())."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c ssl=off -c fsync=off"
        data, log = str(self.directory / "data"), str(self.directory / "log")
        self._run(_pg_bin("pg_ctl"), "-D", data, "-o", options, "-l", log, "-w", "start")

    def halt(self) -> None:
        """Stop the server (fast shutdown: sessions are cut), keeping its data for resume()."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self._as_postgres, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            try:
                self._run(_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class MotoServer:
    """moto's standalone server (S3, Secrets Manager, ...) on a free loopback port."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls) -> MotoServer:
        port = free_port()
        binary = Path(sys.executable).parent / "moto_server"
        process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        server = cls(process, port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(server.url + "/moto-api/", timeout=1)
                return server
            except httpx.HTTPError:
                time.sleep(0.2)
        server.stop()
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class HttpApi:
    """GET /health → 200 (Server: test-api/1.0); GET /private → 401 unless basic auth user:password;
    GET /broken → 503; anything else → 404."""

    def __init__(self, user: str = "api", password: str = "api-pw"):
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            server_version = "test-api/1.0"
            sys_version = ""

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                routes: dict[str, Callable[[], int]] = {
                    "/health": lambda: 200,
                    "/private": lambda: 200 if self.headers.get("Authorization") == expected else 401,
                    "/broken": lambda: 503,
                }
                status = routes.get(self.path, lambda: 404)()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentServer:
    """Accepts TCP connections and never says a word: a login that hangs until the test's deadline."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])

    def stop(self) -> None:
        self.sock.close()
