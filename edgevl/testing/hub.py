"""A stand-in for the Hugging Face Hub on a loopback port, serving repos from local folders, for tests.

It answers the few requests `huggingface_hub` makes to download files: the model info with the file list
(`GET /api/models/{repo}[/revision/{rev}]?blobs=true`) and the files (`HEAD`/`GET /{repo}/resolve/{rev}/{file}`)
with the headers the client checks (X-Repo-Commit, ETag, Content-Length) and byte ranges, so resumed downloads
work as on the real hub. It can also demand a token, cut downloads of a file midway, and stall one midway (so that
a test can kill the downloading process at a known byte).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$")


@dataclass
class StandInHub:
    """What the stand-in serves, and what it saw."""

    repos: dict[str, Path]  # repo id -> folder holding its files
    token: str | None = None  # when set, requests must bring it
    #: file name -> for each of its next GETs, the bytes sent before the connection drops
    cut_after: dict[str, list[int]] = field(default_factory=dict)
    #: file name -> the bytes its next GET sends before it stalls, until `released` is set (or the hub stops)
    hold_after: dict[str, int] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)

    def files(self, repo: str) -> list[Path]:
        return sorted(path for path in self.repos[repo].rglob("*") if path.is_file())


@contextmanager
def stand_in_hub(repos: dict[str, Path], token: str | None = None, cut_after: dict[str, list[int]] | None = None,
                 hold_after: dict[str, int] | None = None) -> Iterator[StandInHub]:
    """Serve `repos` on a free loopback port; point HF_ENDPOINT at `hub.url`."""
    hub = StandInHub(repos, token, {name: list(cuts) for name, cuts in (cut_after or {}).items()},
                     dict(hold_after or {}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.released.set()
        server.shutdown()
        server.server_close()
        thread.join()


def _handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # quiet: tests read hub.requests
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append((self.command, path, self.headers.get("Range")))
            if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                return self._json(401, {"error": "Invalid credentials in Authorization header"})
            if match := _INFO.match(path):
                return self._info(match.group(1))
            if match := _RESOLVE.match(path):
                return self._file(match.group(1), match.group(2), body)
            self._json(404, {"error": "not found"})

        def _info(self, repo: str) -> None:
            if repo not in hub.repos:
                return self._json(404, {"error": "Repository not found"}, error_code="RepoNotFound")
            root = hub.repos[repo]
            siblings = [{"rfilename": p.relative_to(root).as_posix(), "size": p.stat().st_size}
                        for p in hub.files(repo)]
            self._json(200, {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings})

        def _file(self, repo: str, name: str, body: bool) -> None:
            path = hub.repos[repo] / name if repo in hub.repos else None
            if path is None or not path.is_file():
                return self._json(404, {"error": "Entry not found"}, error_code="EntryNotFound")
            data = path.read_bytes()
            start = int(match.group(1)) if (match := re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")) else 0
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            if hub.cut_after.get(name):  # the connection drops midway
                self.wfile.write(data[start:start + hub.cut_after[name].pop(0)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if (held := hub.hold_after.pop(name, None)) is not None:  # a stalled download
                self.wfile.write(data[start:start + held])
                self.wfile.flush()
                hub.released.wait()
                start += held
            try:
                self.wfile.write(data[start:])
            except ConnectionError:  # the client went away (a test killed it)
                self.close_connection = True

        def _json(self, status: int, payload: dict, error_code: str | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if error_code:
                self.send_header("X-Error-Code", error_code)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler
