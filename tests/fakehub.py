"""A fake Hugging Face Hub on 127.0.0.1, for download tests that run the real huggingface_hub client.

It answers exactly what `snapshot_download(repo_id, endpoint=hub.url, ...)` (huggingface_hub 2.4) asks for:

* ``GET /api/models/{repo}/revision/{rev}`` (and ``/api/models/{repo}``): repo info; ``sha`` is the commit.
* ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=..``: the file listing (path, size, git oid, LFS info).
* ``HEAD /{repo}/resolve/{rev}/{filename}``: file metadata in ``X-Repo-Commit``, ``ETag`` and ``Content-Length``.
* ``GET /{repo}/resolve/{rev}/{filename}``: the bytes, with ``Range: bytes=N-`` support (206), which the client
  uses to resume a download whose connection dropped.

Files are served over plain HTTP: no ``X-Xet-*`` headers, so the client never takes the Xet path. Errors carry the
hub's ``X-Error-Code`` header (RepoNotFound, RevisionNotFound, EntryNotFound) so the client raises the same
exceptions as against huggingface.co.

Test knobs:

* every request is recorded (``hub.requests``, ``hub.requested_files()``, ``hub.gets(name)``; ``hub.reset()``);
* ``chunk_size`` / ``delay``: file bodies are written in chunks with a sleep between them, so a download lasts
  long enough for several progress reports;
* ``hub.fail(filename, Failure(...), ...)``: answer GETs of a file with an HTTP error, or cut the connection after
  some bytes (rules are used in order, each for ``times`` GETs; ``times=None`` means for ever).

The server binds 127.0.0.1 on a free port, runs in daemon threads, and stops on ``close()`` (also on leaving
``with serve_repos(...)``), and by itself after ``max_lifetime_s`` in case a test never closes it.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".model", ".onnx")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class RepoFileData:
    path: str
    data: bytes
    oid: str  # git blob sha1
    sha256: str | None  # set for files the hub would store in LFS

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        """The hub's ETag: the sha256 for LFS files, the git blob sha1 otherwise."""
        return self.sha256 or self.oid


class FakeRepo:
    def __init__(self, repo_id: str, files: Mapping[str, bytes], branch: str = "main"):
        self.repo_id, self.branch = repo_id, branch
        self.files: dict[str, RepoFileData] = {}
        for path, data in sorted(files.items()):
            lfs = path.endswith(LFS_SUFFIXES)
            self.files[path] = RepoFileData(path, data, git_blob_sha1(data),
                                            hashlib.sha256(data).hexdigest() if lfs else None)
        listing = "".join(f"{f.path}\0{f.oid}\n" for f in self.files.values())
        self.commit = hashlib.sha1(f"{repo_id}\n{listing}".encode()).hexdigest()

    @classmethod
    def from_source(cls, repo_id: str, source: Path | str | Mapping[str, bytes | str | Path]) -> "FakeRepo":
        """A folder (every file under it, recursively) or a {path in repo: bytes | text | local file} mapping."""
        if isinstance(source, Mapping):
            files = {}
            for path, value in source.items():
                if isinstance(value, Path):
                    value = value.read_bytes()
                elif isinstance(value, str):
                    value = value.encode()
                files[path] = value
            return cls(repo_id, files)
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"not a folder: {folder}")
        return cls(repo_id, {p.relative_to(folder).as_posix(): p.read_bytes()
                             for p in folder.rglob("*") if p.is_file()})

    def resolves(self, revision: str) -> bool:
        return revision in (self.branch, self.commit)

    def size_of(self, paths) -> int:
        return sum(self.files[p].size for p in paths)


@dataclass
class Failure:
    """How to break a GET of a file: answer `status`, or (with `drop_after`) send the headers and that many bytes
    of the body, then cut the connection. Applies to `times` GETs (None: every one). HEADs are never broken, so
    the client has committed to the download when the failure happens."""
    status: int = 500
    drop_after: int | None = None
    times: int | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str  # unquoted, without the query
    kind: str  # info | tree | resolve | other
    repo_id: str | None = None
    revision: str | None = None
    filename: str | None = None  # resolve requests only
    range: str | None = None
    status: int | None = None  # what the fake hub answered (None while it is still answering)
    query: dict = field(default_factory=dict)


class FakeHub:
    def __init__(self, repos: Mapping[str, Path | str | Mapping], *, chunk_size: int = 64 * 1024,
                 delay: float = 0.0, max_lifetime_s: float = 300.0):
        self.repos: dict[str, FakeRepo] = {rid: FakeRepo.from_source(rid, src) for rid, src in repos.items()}
        self.chunk_size, self.delay = chunk_size, delay
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: dict[str, list[Failure]] = {}
        self._connections: set[socket.socket] = set()
        self._closed = False
        hub = self

        class Handler(_HubHandler):
            fakehub = hub

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fakehub-{self.port}", daemon=True)
        self._thread.start()
        self._watchdog = threading.Timer(max_lifetime_s, self.close)
        self._watchdog.daemon = True
        self._watchdog.start()

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connections = list(self._connections)
        self._watchdog.cancel()
        self._server.shutdown()
        self._server.server_close()
        for conn in connections:  # idle keep-alive connections of the client's pool
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "FakeHub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- test knobs ---------------------------------------------------------------------------------------
    def repo(self, repo_id: str | None = None) -> FakeRepo:
        return self.repos[repo_id] if repo_id else next(iter(self.repos.values()))

    def fail(self, filename: str, *rules: Failure) -> None:
        """Break GETs of `filename` (in any repo) following `rules` in order; none given: always answer 500."""
        with self._lock:
            self._failures[filename] = list(rules) or [Failure()]

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def requested_files(self, method: str | None = None) -> set[str]:
        return {r.filename for r in self.requests if r.kind == "resolve" and (method is None or r.method == method)}

    def gets(self, filename: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "resolve" and r.method == "GET" and r.filename == filename]

    # ---- used by the handler ------------------------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_failure(self, filename: str) -> Failure | None:
        with self._lock:
            rules = self._failures.get(filename)
            while rules:
                rule = rules[0]
                if rule.times is None:
                    return rule
                if rule.times > 0:
                    rule.times -= 1
                    if rule.times == 0:
                        rules.pop(0)
                    return rule
                rules.pop(0)
            return None

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._connections.add if alive else self._connections.discard)(conn)


class _HubHandler(BaseHTTPRequestHandler):
    fakehub: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, like the real hub
    timeout = 10  # an idle keep-alive connection ends its thread after this many seconds
    server_version = "FakeHub/1.0"

    def setup(self):
        super().setup()
        self.fakehub._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.fakehub._track(self.connection, False)

    def log_message(self, format, *args):  # noqa: A002 - quiet: the request log is self.fakehub.requests
        pass

    # ---- dispatch -----------------------------------------------------------------------------------------
    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        record = RecordedRequest(method, path, "other", range=self.headers.get("Range"),
                                 query={k: v[-1] for k, v in parse_qs(split.query).items()})
        self.fakehub._record(record)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        try:
            record.status = self._route(method, path, record)
        except (BrokenPipeError, ConnectionResetError):  # the client went away: nothing to answer
            self.close_connection = True

    def _find_repo(self, rest: str) -> tuple[FakeRepo | None, str]:
        """The served repo that `rest` starts with, and what follows it ('' or '/...')."""
        for repo_id in sorted(self.fakehub.repos, key=len, reverse=True):
            if rest == repo_id or rest.startswith(repo_id + "/"):
                return self.fakehub.repos[repo_id], rest[len(repo_id):]
        return None, rest

    def _route(self, method: str, path: str, record: RecordedRequest) -> int:
        if path.startswith("/api/models/"):
            repo, tail = self._find_repo(path[len("/api/models/"):])
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            record.repo_id = repo.repo_id
            if tail in ("", "/"):
                record.kind, record.revision = "info", repo.branch
                return self._info(repo)
            if tail.startswith("/revision/"):
                record.kind, record.revision = "info", tail[len("/revision/"):]
                return self._info(repo, record.revision)
            if tail.startswith("/tree/"):
                record.kind = "tree"
                revision, _, sub = tail[len("/tree/"):].partition("/")
                record.revision = revision
                return self._tree(repo, revision, sub, record.query.get("recursive", "").lower() == "true")
            return self._error(404, None, "Not found")
        repo, tail = self._find_repo(path.lstrip("/"))
        if repo is not None and tail.startswith("/resolve/"):
            revision, _, filename = tail[len("/resolve/"):].partition("/")
            record.kind, record.repo_id, record.revision, record.filename = "resolve", repo.repo_id, revision, filename
            if method not in ("GET", "HEAD"):
                return self._error(405, None, "Method not allowed")
            return self._resolve(method, repo, revision, filename)
        if repo is None and "/resolve/" in path:
            return self._error(404, "RepoNotFound", "Repository not found")
        return self._error(404, None, "Not found")

    # ---- endpoints ----------------------------------------------------------------------------------------
    def _info(self, repo: FakeRepo, revision: str | None = None) -> int:
        if revision is not None and not repo.resolves(revision):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return self._json({
            "_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": repo.commit, "lastModified": "2024-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z",
            "private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "library_name": "transformers",
            "siblings": [{"rfilename": f.path} for f in repo.files.values()],
        })

    def _tree(self, repo: FakeRepo, revision: str, sub: str, recursive: bool) -> int:
        if not repo.resolves(revision):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        entries: dict[str, dict] = {}
        for f in repo.files.values():
            if not f.path.startswith(prefix):
                continue
            parts = f.path[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # folders on the way
                folder = prefix + "/".join(parts[:depth])
                if depth == 1 or recursive:
                    entries.setdefault(folder, {"type": "directory", "oid": git_blob_sha1(folder.encode()),
                                                "size": 0, "path": folder})
            if len(parts) == 1 or recursive:
                entry = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
                if f.sha256 is not None:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                entries[f.path] = entry
        if prefix and not entries:
            return self._error(404, "EntryNotFound", f"{sub} does not exist", commit=repo.commit)
        return self._json(sorted(entries.values(), key=lambda e: e["path"]))

    def _resolve(self, method: str, repo: FakeRepo, revision: str, filename: str) -> int:
        if not repo.resolves(revision):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        f = repo.files.get(filename)
        if f is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", commit=repo.commit)
        common = {"X-Repo-Commit": repo.commit, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
                  "Content-Type": "application/octet-stream"}
        if method == "HEAD":
            self._start(200, {**common, "Content-Length": str(f.size)})
            return 200
        failure = self.fakehub._next_failure(filename)
        if failure is not None and failure.drop_after is None:
            return self._error(failure.status, None, "Internal Error (fake hub)")
        start, end = 0, f.size - 1
        status, headers = 200, dict(common)
        wanted = self.headers.get("Range")
        if wanted:
            parsed = _parse_range(wanted, f.size)
            if parsed is None:
                return self._error(416, None, "Range Not Satisfiable", extra={"Content-Range": f"bytes */{f.size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        headers["Content-Length"] = str(end - start + 1)
        self._start(status, headers)
        body = memoryview(f.data)[start:end + 1]
        if failure is not None:  # send part of the body, then cut the connection
            self._send_body(body[:failure.drop_after])
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return status
        self._send_body(body)
        return status

    # ---- helpers ------------------------------------------------------------------------------------------
    def _send_body(self, body: memoryview) -> None:
        chunk = max(1, self.fakehub.chunk_size)
        for offset in range(0, len(body), chunk):
            if offset and self.fakehub.delay:
                time.sleep(self.fakehub.delay)
            self.wfile.write(body[offset:offset + chunk])
        self.wfile.flush()

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _json(self, payload) -> int:
        body = json.dumps(payload).encode()
        self._start(200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
        self.wfile.write(body)
        return 200

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None,
               extra: dict | None = None) -> int:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        headers.update(extra or {})
        self._start(status, headers)
        if self.command != "HEAD":
            self.wfile.write(body)
        return status


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b`, `bytes=a-` or `bytes=-n` as inclusive (start, end); None when unsatisfiable."""
    unit, _, spec = value.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    if start > end or start >= size:
        return None
    return start, end


@contextmanager
def serve_repos(repos: Mapping[str, Path | str | Mapping], **options) -> Iterator[FakeHub]:
    """`with serve_repos({"org/name": folder}) as hub:` a FakeHub at hub.url, closed on exit."""
    hub = FakeHub(repos, **options)
    try:
        yield hub
    finally:
        hub.close()
