"""A Hub-compatible HTTP endpoint on 127.0.0.1 for tests: git-like repos in memory, served over the Hub's HTTP API.

Why: nothing here reaches huggingface.co, yet `push_to_hub`, `from_pretrained("user/repo")`, `load_dataset` and
`trust_remote_code` must be tested through the real client code paths. huggingface_hub, transformers, diffusers,
datasets and peft all talk to `HF_ENDPOINT` with the requests listed in `shared/reference/hf-stack-notes.md` §5;
this server answers those requests the way the Hub does (commits with 40-hex ids, refs, LFS objects addressed by
sha256, ETag / X-Repo-Commit / Content-Length on `resolve`, `X-Error-Code` on 404s, Range requests).

Uploads use the legacy LFS batch API, so clients must run with `HF_HUB_DISABLE_XET=1`.
Faults can be injected per file (`inject_fault`) to test how clients react to a broken download.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = ("model", "dataset", "space")
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.parquet", "*.arrow", "*.onnx", "*.png", "*.jpg", "*.npy", "*.zip")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS).encode()
FAULTS = ("truncate", "corrupt")


def git_blob_sha1(content: bytes) -> str:
    """Git's object id of a file: what the Hub reports as `oid` / ETag for files not stored in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def git_oid(self) -> str:
        return git_blob_sha1(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def etag(self) -> str:
        """The Hub's ETag: the sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, StoredFile]
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a full commit id -> the commit, as the Hub resolves `revision`."""
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)

    def history(self, oid: str) -> list[Commit]:
        commits = []
        while oid is not None:
            commit = self.commits[oid]
            commits.append(commit)
            oid = commit.parent
        return commits


class HubError(Exception):
    """An HTTP error with the Hub's `X-Error-Code` header (huggingface_hub maps it to its exception classes)."""

    def __init__(self, status: int, message: str, error_code: str | None = None, repo_commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.repo_commit = status, message, error_code, repo_commit


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class LocalHub:
    """The repositories, the pending LFS objects and the request log, shared by all handler threads."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.faults: dict[tuple[str, str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self.server: ThreadingHTTPServer | None = None
        self.endpoint = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Serve on a free port of 127.0.0.1 in a daemon thread; return the endpoint URL (for `HF_ENDPOINT`)."""
        hub = self

        class Handler(HubRequestHandler):
            pass

        Handler.hub = hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="local-hub", daemon=True).start()
        return self.endpoint

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # ------------------------------------------------------------------ test controls
    def inject_fault(self, repo_id: str, path: str, fault: str, repo_type: str = "model") -> None:
        """Serve `path` broken from now on: `truncate` (a short body with a matching Content-Length, as from a
        broken proxy) or `corrupt` (same size, flipped bytes near the end); HEAD metadata stays correct."""
        if fault not in FAULTS:
            raise ValueError(f"fault: expected one of {FAULTS}, got {fault!r}")
        with self.lock:
            self.faults[(repo_type, repo_id, path)] = fault

    def file_paths(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        with self.lock:
            return sorted(self._commit(repo_type, repo_id, revision).files)

    def commit_ids(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Newest first, like `list_repo_commits`."""
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            return [c.oid for c in repo.history(repo.refs["main"])]

    def stored_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> StoredFile:
        with self.lock:
            return self._commit(repo_type, repo_id, revision).files[path]

    # ------------------------------------------------------------------ repository model
    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> Commit:
        repo = self._repo(repo_type, repo_id)
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> tuple[bool, Repo]:
        """Create with an initial commit holding `.gitattributes`, as the Hub does; (created?, repo)."""
        with self.lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                return False, self.repos[key]
            repo = Repo(repo_type, repo_id, private, now_iso())
            self.repos[key] = repo
            self._add_commit(repo, None, "initial commit", {".gitattributes": StoredFile(GITATTRIBUTES, False)})
            return True, repo

    def _add_commit(self, repo: Repo, parent: str | None, title: str, files: dict[str, StoredFile]) -> Commit:
        digest = hashlib.sha1()
        digest.update(f"{parent}\n{title}\n{time.time_ns()}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}:{files[path].etag}\n".encode())
        commit = Commit(digest.hexdigest(), parent, title, files, now_iso())
        repo.commits[commit.oid] = commit
        repo.refs["main"] = commit.oid
        return commit

    def upload_mode(self, path: str, size: int) -> str:
        if size >= LFS_SIZE_THRESHOLD or any(fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS):
            return "lfs"
        return "regular"

    def apply_commit(self, repo_type: str, repo_id: str, revision: str, lines: list[dict]) -> Commit:
        """The NDJSON commit: `header`, then `file` (base64), `lfsFile` (an uploaded sha256), `deletedFile`,
        `deletedFolder` lines, applied on top of the branch head."""
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            if revision not in repo.refs:
                raise HubError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
            head = repo.commits[repo.refs[revision]]
            if not lines or lines[0].get("key") != "header":
                raise HubError(400, "commit payload: the first line must be the header")
            header = lines[0]["value"]
            parent = header.get("parentCommit")
            if parent is not None and parent != head.oid:
                raise HubError(412, f"A commit has happened since {parent}; the branch head is {head.oid}")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    content = (
                        base64.b64decode(value["content"])
                        if value.get("encoding") == "base64"
                        else value["content"].encode()
                    )
                    files[path] = StoredFile(content, self.upload_mode(path, len(content)) == "lfs")
                elif key == "lfsFile":
                    content = self.lfs_objects.get(value["oid"])
                    if content is None:
                        raise HubError(422, f"lfsFile {path}: LFS object {value['oid']} was never uploaded")
                    files[path] = StoredFile(content, True)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"deletedFile {path}: no such file", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for name in [n for n in files if n.startswith(prefix)]:
                        del files[name]
                else:
                    raise HubError(400, f"commit payload: unsupported line key {key!r}")
            return self._add_commit(repo, head.oid, header.get("summary") or "commit", files)

    # ------------------------------------------------------------------ JSON views
    def info_json(self, repo: Repo, commit: Commit) -> dict:
        siblings = [
            {"rfilename": path, "size": len(f.content), "blobId": f.git_oid}
            | ({"lfs": {"sha256": f.sha256, "size": len(f.content), "pointerSize": 134}} if f.lfs else {})
            for path, f in sorted(commit.files.items())
        ]
        author = repo.repo_id.split("/")[0]
        info = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": author,
            "sha": commit.oid,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "siblings": siblings,
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        return info

    def tree_entries(self, commit: Commit, path: str, recursive: bool) -> list[dict]:
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(name.startswith(prefix) for name in commit.files):
            if path.strip("/") in commit.files:
                return [self.file_entry(path.strip("/"), commit.files[path.strip("/")])]
            raise HubError(404, f"{path} does not exist at {commit.oid}", "EntryNotFound", commit.oid)
        entries, folders = [], set()
        for name, stored in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                folder = prefix + "/".join(rest[:depth])
                if recursive or depth == 1:
                    folders.add(folder)
            if recursive or len(rest) == 1:
                entries.append(self.file_entry(name, stored))
        entries += [self.folder_entry(commit, folder) for folder in sorted(folders)]
        return entries

    @staticmethod
    def file_entry(path: str, stored: StoredFile) -> dict:
        entry = {"type": "file", "oid": stored.git_oid, "size": len(stored.content), "path": path}
        if stored.lfs:
            entry["lfs"] = {"oid": stored.sha256, "size": len(stored.content), "pointerSize": 134}
        return entry

    @staticmethod
    def folder_entry(commit: Commit, folder: str) -> dict:
        oid = hashlib.sha1(f"{commit.oid}:{folder}".encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": folder}


def split_repo_path(parts: list[str]) -> tuple[str, list[str]]:
    """`org/name/rest...` -> ("org/name", rest); the Hub's repo ids always have a namespace here."""
    if len(parts) < 2:
        raise HubError(404, "Repository not found: a repo id needs a namespace (org/name)", "RepoNotFound")
    return f"{parts[0]}/{parts[1]}", parts[2:]


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes the Hub's URLs to `LocalHub`; HTTP/1.1 keep-alive, so every body is read and every reply sized."""

    protocol_version = "HTTP/1.1"
    hub: LocalHub

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    # ------------------------------------------------------------------ plumbing
    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, send_body: bool = True):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def reply_json(self, payload, status: int = 200, headers: dict[str, str] | None = None):
        self.reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        body = self.read_body() if method in ("POST", "PUT") else b""
        with self.hub.lock:
            self.hub.requests.append((method, url.path))
        try:
            self.route(method, parts, query, body)
        except HubError as error:
            headers = {}
            if error.error_code:
                headers["X-Error-Code"] = error.error_code
                headers["X-Error-Message"] = error.message
            if error.repo_commit:
                headers["X-Repo-Commit"] = error.repo_commit
            self.reply(error.status, json.dumps({"error": error.message}).encode(), headers, method != "HEAD")
        except Exception as error:  # a bug in this test server: make it visible to the client
            body = json.dumps({"error": f"local hub: {type(error).__name__}: {error}"}).encode()
            self.reply(500, body, send_body=method != "HEAD")

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    # ------------------------------------------------------------------ routes
    def route(self, method: str, parts: list[str], query: dict, body: bytes) -> None:
        hub = self.hub
        if parts[:1] == ["api"]:
            return self.route_api(method, parts[1:], query, body)
        if parts[:1] == ["lfs-upload"] and method == "PUT":
            oid = parts[1]
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, f"LFS upload: the body's sha256 does not match {oid}")
            with hub.lock:
                hub.lfs_objects[oid] = body
            return self.reply(200)
        repo_type = "model"
        if parts[:1] in (["datasets"], ["spaces"]):
            repo_type, parts = parts[0][:-1], parts[1:]
        if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            return self.lfs_batch(repo_type, f"{parts[0]}/{parts[1][:-4]}", json.loads(body or b"{}"))
        repo_id, rest = split_repo_path(parts)
        if rest[:1] == ["resolve"] and len(rest) >= 3 and method in ("GET", "HEAD"):
            return self.resolve(repo_type, repo_id, rest[1], "/".join(rest[2:]), method)
        raise HubError(404, f"local hub: no route for {method} /{'/'.join(parts)}")

    def route_api(self, method: str, parts: list[str], query: dict, body: bytes) -> None:
        hub = self.hub
        if parts == ["repos", "create"] and method == "POST":
            payload = json.loads(body or b"{}")
            repo_type = payload.get("type") or "model"
            if repo_type not in REPO_TYPES:
                raise HubError(400, f"type: unknown repo type {repo_type!r}")
            repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
            created, _ = hub.create_repo(repo_type, repo_id, payload.get("visibility") == "private")
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{hub.endpoint}/{prefix}{repo_id}"
            if not created:
                return self.reply_json({"error": "You already created this repo", "url": url}, 409)
            return self.reply_json({"url": url, "name": repo_id, "id": repo_id})
        if parts == ["validate-yaml"] and method == "POST":
            return self.reply_json({"errors": [], "warnings": []})
        if parts == ["whoami-v2"]:
            return self.reply_json({"type": "user", "name": "tester", "orgs": [], "auth": {"type": "access_token"}})
        if len(parts) < 3 or parts[0] not in ("models", "datasets", "spaces"):
            raise HubError(404, f"local hub: no route for {method} /api/{'/'.join(parts)}")
        repo_type = parts[0][:-1]
        repo_id, rest = split_repo_path(parts[1:])
        action, args = (rest[0], rest[1:]) if rest else ("", [])
        with hub.lock:
            repo = hub._repo(repo_type, repo_id)
            if not rest and method == "GET":
                return self.reply_json(hub.info_json(repo, repo.commits[repo.refs["main"]]))
            if action == "revision" and args and method == "GET":
                return self.reply_json(hub.info_json(repo, hub._commit(repo_type, repo_id, "/".join(args))))
            if action == "tree" and args and method == "GET":
                commit = hub._commit(repo_type, repo_id, args[0])
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self.reply_json(hub.tree_entries(commit, "/".join(args[1:]), recursive))
            if action == "paths-info" and args and method == "POST":
                return self.paths_info(hub._commit(repo_type, repo_id, "/".join(args)), body)
            if action == "preupload" and args and method == "POST":
                return self.preupload(hub._commit(repo_type, repo_id, "/".join(args)), json.loads(body or b"{}"))
            if action == "refs" and method == "GET":
                branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid} for n, oid in repo.refs.items()]
                return self.reply_json({"branches": branches, "converts": [], "tags": []})
            if action == "commits" and args and method == "GET":
                commit = hub._commit(repo_type, repo_id, "/".join(args))
                history = [
                    {"id": c.oid, "title": c.title, "message": "", "authors": [{"user": "tester"}], "date": c.date}
                    for c in repo.history(commit.oid)
                ]
                return self.reply_json(history)
        if action == "commit" and args and method == "POST":
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            commit = hub.apply_commit(repo_type, repo_id, "/".join(args), lines)
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return self.reply_json(
                {
                    "commitUrl": f"{hub.endpoint}/{prefix}{repo_id}/commit/{commit.oid}",
                    "commitOid": commit.oid,
                    "pullRequestUrl": None,
                }
            )
        raise HubError(404, f"local hub: no route for {method} /api/{'/'.join(parts)}")

    def paths_info(self, commit: Commit, body: bytes) -> None:
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                entries.append(self.hub.file_entry(path, commit.files[path]))
            elif any(name.startswith(path + "/") for name in commit.files):
                entries.append(self.hub.folder_entry(commit, path))
        self.reply_json(entries)

    def preupload(self, commit: Commit, payload: dict) -> None:
        answers = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            existing = commit.files.get(path)
            answers.append(
                {
                    "path": path,
                    "uploadMode": self.hub.upload_mode(path, size),
                    "shouldIgnore": False,
                    "oid": None if existing is None else existing.etag,
                }
            )
        self.reply_json({"files": answers, "commitOid": commit.oid})

    def lfs_batch(self, repo_type: str, repo_id: str, payload: dict) -> None:
        with self.hub.lock:
            self.hub._repo(repo_type, repo_id)
            objects = []
            for item in payload.get("objects", []):
                oid, size = item["oid"], int(item["size"])
                entry = {"oid": oid, "size": size, "authenticated": True}
                if oid not in self.hub.lfs_objects:
                    entry["actions"] = {"upload": {"href": f"{self.hub.endpoint}/lfs-upload/{oid}", "header": {}}}
                objects.append(entry)
        self.reply_json(
            {"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"}
        )

    def resolve(self, repo_type: str, repo_id: str, revision: str, path: str, method: str) -> None:
        hub = self.hub
        with hub.lock:
            commit = hub._commit(repo_type, repo_id, revision)
            stored = commit.files.get(path)
            if stored is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit.oid)
            fault = hub.faults.get((repo_type, repo_id, path))
        content = stored.content
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{stored.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if method == "HEAD":
            return self.reply(200, b"", {**headers, "Content-Length": str(len(content))}, send_body=False)
        if fault == "truncate":
            content = content[: len(content) // 2]
        elif fault == "corrupt":
            content = content[:-64] + bytes(b ^ 0xFF for b in content[-64:])
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            start_text, _, end_text = range_header[len("bytes=") :].partition("-")
            start = int(start_text) if start_text else max(0, len(content) - int(end_text))
            end = min(int(end_text), len(content) - 1) if start_text and end_text else len(content) - 1
            if start >= len(content):
                return self.reply(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", {"Content-Range": f"bytes */{len(content)}"}
                )
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return self.reply(206, content[start : end + 1], headers)
        self.reply(200, content, headers)
