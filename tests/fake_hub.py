"""A Hugging Face hub on this machine, for the real download code (huggingface_hub's snapshot_download)
without a network: the few endpoints a model download uses, over HTTP on 127.0.0.1. Point the code at
it with `FakeHub.use(monkeypatch)`."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}  # repo id -> {file name: contents}
        self.gated: set[str] = set()
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add_folder(self, repo_id: str, folder: Path) -> None:
        self.repos[repo_id] = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def use(self, monkeypatch, cache: Path) -> None:
        """Send huggingface_hub's requests here and its downloads to `cache` (it reads HF_ENDPOINT and
        HF_HUB_CACHE once, at import: timm's hf-hub: path relies on its default cache)."""
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
            monkeypatch.setattr(constants, name, str(cache))
        monkeypatch.setenv("HF_ENDPOINT", self.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    # -- the endpoints --------------------------------------------------------------------------------
    def _answer(self, request, body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        self.requests.append(f"{request.command} {path}")
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, kind, rest = "/".join(parts[2:4]), parts[4], parts[6:]
            files = self._repo(request, repo_id, body)
            if files is None:
                return
            if kind == "revision":
                info = {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": n} for n in files]}
                return self._send(request, 200, json.dumps(info).encode(), body, "application/json")
            if kind == "tree":
                prefix = "/".join(rest)
                tree = [
                    {"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                    for n, d in files.items()
                    if n.startswith(prefix)
                ]
                return self._send(request, 200, json.dumps(tree).encode(), body, "application/json")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, name = "/".join(parts[:2]), "/".join(parts[4:])
            files = self._repo(request, repo_id, body)
            if files is None:
                return
            if name not in files:
                return self._error(request, 404, "EntryNotFound", f"{name} does not exist", body)
            data = files[name]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
            return self._send(request, 200, data, body, "application/octet-stream", headers)
        self._error(request, 404, "", "not a path of this hub", body)

    def _repo(self, request, repo_id: str, body: bool) -> dict[str, bytes] | None:
        if repo_id in self.gated:
            self._error(request, 401, "GatedRepo", f"Access to model {repo_id} is restricted.", body)
            return None
        if repo_id not in self.repos:
            self._error(request, 401, "RepoNotFound", "Repository not found", body)
            return None
        return self.repos[repo_id]

    def _error(self, request, status: int, code: str, message: str, body: bool) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message} if code else {}
        self._send(
            request, status, json.dumps({"error": message}).encode(), body, "application/json", headers
        )

    @staticmethod
    def _send(request, status: int, data: bytes, body: bool, kind: str, headers: dict | None = None) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        if body:
            request.wfile.write(data)
