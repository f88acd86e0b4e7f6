"""A small Hugging Face Hub–compatible HTTP server on loopback, for tests (test infrastructure, not product).

The Hub is not reachable from the test machines, so the push / pull paths are exercised against this server with the
UNMODIFIED ``huggingface_hub`` and ``transformers`` clients: point ``HF_ENDPOINT`` at :attr:`HubServer.url` (and give a
token, e.g. ``HF_TOKEN``) *before* importing ``huggingface_hub`` — its endpoint is read at import time, so client code
runs in subprocesses.

Implemented (model repos; ``{rev}`` is a branch, a tag or a commit id, URL-quoted):

==========================================================  ==============================================================
``GET  /api/whoami-v2``                                     the fake user
``POST /api/repos/create``                                  new repo with an initial commit (``.gitattributes``); 409 if
                                                            it exists
``POST /api/validate-yaml``                                 parses the README front matter (400 on invalid YAML)
``POST /api/models/{repo}/preupload/{rev}``                 every file is uploaded inline ("regular"): the LFS / Xet
                                                            transfer protocols are not implemented
``POST /api/models/{repo}/commit/{rev}``                    NDJSON commit: ``header``, ``file`` (base64),
                                                            ``deletedFile``, ``deletedFolder``; checks ``parentCommit``
``POST /api/models/{repo}/branch/{branch}``                 create a branch (``startingPoint``); 409 if it exists
``POST /api/models/{repo}/tag/{rev}``                       create a tag; 409 if it exists
``GET  /api/models/{repo}/refs``                            branches and tags
``GET  /api/models/{repo}[/revision/{rev}]``                model info: ``sha``, ``siblings``, ``cardData``
``GET  /api/models/{repo}/tree/{rev}[/{path}]``             file listing (``recursive``)
``GET  /api/models/{repo}/commits/{rev}``                   commit history
``HEAD|GET /{repo}/resolve/{rev}/{path}``                   file metadata / content with ``X-Repo-Commit``, ``ETag``
                                                            (git blob id), ``Content-Length``; weight-like files
                                                            (:data:`LFS_SUFFIXES`) answer as the Hub does for LFS
                                                            files: a 302 to another host (``localhost``, a stand-in
                                                            CDN) with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``
``GET  /cdn/{sha256}``                                      the stand-in CDN
==========================================================  ==============================================================

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), which is how
``huggingface_hub`` tells a missing file from a missing repo. Writes need an ``Authorization: Bearer`` header; reads
do not. Everything is kept in memory; :attr:`HubServer.requests` records ``(method, path)`` of every request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".mp4", ".npz", ".onnx")
_GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


def _blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    title: str
    message: str
    date: str = field(default_factory=_now)


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)

    def resolve(self, revision: str) -> str | None:
        """Commit id of a branch, tag or (full) commit id; None if unknown."""
        revision = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        return revision if revision in self.commits else None

    def commit(self, branch: str, files: dict[str, bytes], title: str, message: str = "") -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(json.dumps([parent, title, message, sorted((p, _blob_id(c)) for p, c in files.items()),
                                          time.time_ns()]).encode())
        commit = Commit(digest.hexdigest(), parent, files, title, message)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


class HubServer:
    """The server; ``with HubServer() as hub:`` serves on ``hub.url`` from a daemon thread until the block ends."""

    user = "mambavl-tester"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        """Same server under another host name, so the client treats it as a CDN (not a Hub host)."""
        return f"http://localhost:{self._httpd.server_address[1]}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------ helpers
    def repo(self, repo_id: str) -> Repo:
        with self._lock:
            if repo_id not in self.repos:
                raise _HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
            return self.repos[repo_id]

    def files_at(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (for assertions in tests)."""
        repo = self.repo(repo_id)
        oid = repo.resolve(revision)
        if oid is None:
            raise KeyError(f"{repo_id}: no revision {revision!r}")
        return dict(repo.commits[oid].files)


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        hub = server

    return Handler


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES: list[tuple[str, re.Pattern, str]] = [
    (m, re.compile(p), name) for m, p, name in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", "create_branch"),
        ("POST", rf"/api/models/{_REPO}/tag/(?P<rev>[^/]+)", "create_tag"),
        ("GET", rf"/api/models/{_REPO}/refs", "refs"),
        ("GET", rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("GET", rf"/api/models/{_REPO}/commits/(?P<rev>[^/]+)", "commits"),
        ("GET", rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "model_info"),
        ("GET", r"/cdn/(?P<sha>[0-9a-f]{64})", "cdn"),
        ("HEAD", r"/cdn/(?P<sha>[0-9a-f]{64})", "cdn"),
        ("GET", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, format, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's signature)
        pass  # keep test output clean; requests are recorded in hub.requests

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ------------------------------------------------------------------------------------------------ plumbing
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.hub.requests.append((method, split.path))
        try:
            for route_method, pattern, name in _ROUTES:
                match = pattern.fullmatch(split.path)
                if match and route_method == method:
                    if method == "POST" and not self.headers.get("Authorization", "").startswith("Bearer "):
                        raise _HubError(401, "Invalid credentials in Authorization header")
                    params = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    getattr(self, f"_{name}")(**params)
                    return
            raise _HubError(404, f"no route for {method} {split.path}")
        except _HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self._send_json({"error": e.message}, status=e.status, headers=headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, length: int | None = None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, data, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _json_body(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as e:
            raise _HubError(400, f"invalid JSON body: {e}") from e

    def _repo_and_commit(self, repo_id: str, rev: str | None) -> tuple[Repo, Commit]:
        repo = self.hub.repo(repo_id)
        oid = repo.resolve(rev or "main")
        if oid is None:
            raise _HubError(404, f"Revision {rev} not found in {repo_id}", "RevisionNotFound")
        return repo, repo.commits[oid]

    # ------------------------------------------------------------------------------------------------ routes
    def _whoami(self) -> None:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise _HubError(401, "Invalid credentials in Authorization header")
        self._send_json({"type": "user", "name": self.hub.user, "fullname": "MambaVL tester", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def _create_repo(self) -> None:
        body = self._json_body()
        if body.get("type", "model") != "model":
            raise _HubError(400, "this test server hosts model repositories only")
        repo_id = f"{body.get('organization') or self.hub.user}/{body['name']}"
        with self.hub._lock:
            if repo_id in self.hub.repos:
                self._send_json({"error": "You already created this model repo", "url": f"{self.hub.url}/{repo_id}"},
                                status=409)
                return
            repo = Repo(repo_id)
            repo.commit("main", {".gitattributes": _GITATTRIBUTES}, "initial commit")
            self.hub.repos[repo_id] = repo
        self._send_json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> None:
        content = self._json_body().get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as e:
            self._send_json({"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []}, status=400)
            return
        if data is not None and not isinstance(data, dict):
            self._send_json({"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []}, status=400)
            return
        self._send_json({"errors": [], "warnings": []})

    def _preupload(self, repo: str, rev: str) -> None:
        self._repo_and_commit(repo, rev)
        files = self._json_body().get("files", [])
        self._send_json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]})

    def _commit(self, repo: str, rev: str) -> None:
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "a commit payload starts with a header line")
        header = lines[0]["value"]
        with self.hub._lock:
            target, head = self._repo_and_commit(repo, rev)
            if rev not in target.branches:
                raise _HubError(400, f"can only commit to a branch, not {rev!r}")
            if header.get("parentCommit") not in (None, head.oid):
                raise _HubError(412, f"parentCommit {header['parentCommit']} is not the head of {rev} ({head.oid})")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise _HubError(404, f"cannot delete {value['path']}: not in the repo", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: c for p, c in files.items() if not p.startswith(prefix)}
                else:
                    raise _HubError(400, f"operation {key!r} is not supported by this test server (uploads are inline)")
            commit = target.commit(rev, files, header.get("summary", ""), header.get("description", ""))
        self._send_json({"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                         "commitUrl": f"{self.hub.url}/{repo}/commit/{commit.oid}"})

    def _create_branch(self, repo: str, branch: str) -> None:
        with self.hub._lock:
            target, start = self._repo_and_commit(repo, self._json_body().get("startingPoint"))
            if branch in target.branches:
                self._send_json({"error": f"branch {branch} already exists"}, status=409)
                return
            target.branches[branch] = start.oid
        self._send_json({})

    def _create_tag(self, repo: str, rev: str) -> None:
        tag = self._json_body()["tag"]
        with self.hub._lock:
            target, commit = self._repo_and_commit(repo, rev)
            if tag in target.tags:
                self._send_json({"error": f"tag {tag} already exists"}, status=409)
                return
            target.tags[tag] = commit.oid
        self._send_json({})

    def _refs(self, repo: str) -> None:
        target = self.hub.repo(repo)
        refs = lambda kind, names: [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": o}  # noqa: E731
                                    for n, o in sorted(names.items())]
        self._send_json({"branches": refs("heads", target.branches), "tags": refs("tags", target.tags),
                         "converts": [], "pullRequests": []})

    def _tree_entry(self, path: str, content: bytes) -> dict:
        entry = {"type": "file", "oid": _blob_id(content), "size": len(content), "path": path}
        if path.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
        return entry

    def _tree(self, repo: str, rev: str, path: str | None) -> None:
        _, commit = self._repo_and_commit(repo, rev)
        prefix = (path or "").strip("/")
        recursive = self.query.get("recursive") in ("1", "true", "True")
        entries, folders = [], set()
        for file_path, content in sorted(commit.files.items()):
            if prefix and not file_path.startswith(prefix + "/"):
                continue
            rest = file_path[len(prefix) + 1:] if prefix else file_path
            if "/" in rest:
                parts = rest.split("/")
                for depth in range(1, len(parts) if recursive else 2):
                    folders.add("/".join(([prefix] if prefix else []) + parts[:depth]))
                if not recursive:
                    continue
            entries.append(self._tree_entry(file_path, content))
        if prefix and not entries and not folders:
            raise _HubError(404, f"{prefix} not found at {rev}", "EntryNotFound", commit.oid)
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                    for f in sorted(folders)]
        self._send_json(entries)

    def _commits(self, repo: str, rev: str) -> None:
        target, commit = self._repo_and_commit(repo, rev)
        history = []
        while commit is not None:
            history.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                            "authors": [{"user": self.hub.user}], "date": commit.date})
            commit = target.commits.get(commit.parent) if commit.parent else None
        self._send_json(history)

    def _model_info(self, repo: str, rev: str | None = None) -> None:
        target, commit = self._repo_and_commit(repo, rev)
        card = {}
        readme = commit.files.get("README.md", b"").decode("utf-8", errors="replace")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme, flags=re.S)
        if match:
            card = yaml.safe_load(match.group(1)) or {}
        self._send_json({
            "id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": commit.oid, "private": False,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": card.get("tags", []),
            "pipeline_tag": card.get("pipeline_tag"), "library_name": card.get("library_name"),
            "lastModified": commit.date, "createdAt": target.created_at, "cardData": card or None,
            "siblings": [{"rfilename": p, "size": len(c)} for p, c in sorted(commit.files.items())],
        })

    def _resolve(self, repo: str, rev: str, path: str) -> None:
        target, commit = self._repo_and_commit(repo, rev)
        if path not in commit.files:
            raise _HubError(404, f"Entry {path} not found at {rev}", "EntryNotFound", commit.oid)
        content = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{_blob_id(content)}"', "Accept-Ranges": "bytes"}
        if path.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(content).hexdigest()
            headers.update({"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(content)),
                            "Location": f"{self.hub.cdn_url}/cdn/{sha}?repo={quote(repo)}&path={quote(path)}"})
            self._send(302, b"", headers)
            return
        self._send_content(content, headers)

    def _cdn(self, sha: str) -> None:
        repo = self.hub.repos.get(self.query.get("repo", ""))
        for commit in (repo.commits.values() if repo else []):
            content = commit.files.get(self.query.get("path", ""))
            if content is not None and hashlib.sha256(content).hexdigest() == sha:
                self._send_content(content, {"ETag": f'"{sha}"', "Content-Type": "application/octet-stream"})
                return
        raise _HubError(404, f"blob {sha} not found")

    def _send_content(self, content: bytes, headers: dict[str, str]) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and self.command == "GET":
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            self._send(206, content[start:end + 1], headers)
            return
        self._send(200, content, headers, length=len(content))


if __name__ == "__main__":  # python tests/hub_server.py: serve until interrupted
    with HubServer() as hub:
        print(f"serving on {hub.url}  (export HF_ENDPOINT={hub.url} HF_TOKEN=hf_test)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
