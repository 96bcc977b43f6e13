"""A local Hugging Face Hub for the tests: `python hub_server.py --root DIR --port N --token T`.

olah (PyPI `olah`, a self-hosted Hub mirror) serves the download API that huggingface_hub and transformers use
(`/api/models/{repo}/revision/{rev}`, `/{repo}/resolve/{rev}/{file}`, trees, refs) from git repositories under
`DIR/mirrors/models/{org}/{name}`, with real revisions: every commit, branch and tag resolves to its git sha. olah
has no upload API, so this module adds the Hub's write routes on the same app, each one a git operation on those
repositories:

- `POST /api/repos/create`                         -> `git init` + a first commit on `main` (409 if it exists)
- `POST /api/models/{repo}/preupload/{rev}`         -> every file "regular": its bytes travel inline in the commit
- `POST /api/models/{repo}/commit/{rev}`            -> the NDJSON commit (base64 files) as one git commit
- `POST /api/models/{repo}/branch/{name}`, `PUT /api/models/{repo}/settings` (private, gated)
- `GET /api/models/{repo}`                          -> the repo info at `main` (olah asks upstream for it)
- `POST /api/validate-yaml`                         -> the model-card metadata checks listed in `validate_metadata`

Access: write routes need `Authorization: Bearer T`; a private or gated repo answers every read without that token
as the Hub does (401 `RepoNotFound` for private, 401 `GatedRepo` for gated).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
from pathlib import Path
from urllib.parse import unquote

import git
import olah.server as olah_server
import uvicorn
import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from huggingface_hub.repocard_data import model_index_to_eval_results
from olah.configs import OlahConfig
from olah.server_routes import meta_proxy_common
from olah.utils.logging import build_logger

# Hub pipeline tags of the vision and multimodal tasks (the Hub rejects a tag outside its task list).
PIPELINE_TAGS = {
    "depth-estimation", "feature-extraction", "image-classification", "image-feature-extraction",
    "image-segmentation", "image-text-to-text", "image-to-image", "keypoint-detection", "mask-generation",
    "object-detection", "video-classification", "zero-shot-image-classification", "zero-shot-object-detection",
}
# Hub license identifiers (a subset of the Hub's list; `other` needs license_name and license_link).
LICENSES = {
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0", "cc0-1.0", "gpl-3.0", "lgpl-3.0", "llama3", "openrail", "other", "unknown",
}
API_ROUTE = re.compile(
    r"^/api/models/(?P<org>[^/]+)/(?P<name>[^/]+)(?:/(?P<op>[^/]+)(?:/(?P<rev>[^/]+)(?:/(?P<file>.+))?)?)?$"
)
RESOLVE_ROUTE = re.compile(r"^/(?P<org>[^/]+)/(?P<name>[^/]+)/(?P<op>resolve)/(?P<rev>[^/]+)/(?P<file>.+)$")
READ_OPS = {"revision", "tree", "paths-info", "resolve", "commits"}
WRITE_ROUTES = re.compile(r"^/api/(repos/create|models/[^/]+/[^/]+/(preupload|commit|branch|settings))")


def validate_metadata(content: str) -> list[str]:
    """Errors in a model card's YAML front matter, by the Hub's rules: a mapping; `license` a Hub licence id, and
    `other` with `license_name` and `license_link`; `pipeline_tag` a Hub task; `library_name` a string; `tags`,
    `datasets` lists of strings; `base_model` a repo id or a list of them; `model-index` well formed."""
    match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.S)
    if match is None:
        return []  # no metadata block: the Hub only warns
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"YAML does not parse: {err}"]
    if not isinstance(meta, dict):
        return ["metadata must be a YAML mapping"]
    errors = []
    license_id = meta.get("license")
    if license_id is not None and license_id not in LICENSES:
        errors.append(f'"license" must be one of the Hub licence ids, got {license_id!r}')
    if license_id == "other":
        errors += [f'"license: other" needs "{key}"' for key in ("license_name", "license_link") if not meta.get(key)]
    if "pipeline_tag" in meta and meta["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be a Hub task, got {meta["pipeline_tag"]!r}')
    if "library_name" in meta and not isinstance(meta["library_name"], str):
        errors.append('"library_name" must be a string')
    for key in ("tags", "datasets"):
        if key in meta and not (isinstance(meta[key], list) and all(isinstance(v, str) for v in meta[key])):
            errors.append(f'"{key}" must be a list of strings')
    base = meta.get("base_model")
    for repo_id in [base] if isinstance(base, str) else base or []:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(repo_id)):
            errors.append(f'"base_model" must be Hub repo ids, got {repo_id!r}')
    if "model-index" in meta:
        try:
            model_index_to_eval_results(meta["model-index"])
        except (KeyError, TypeError, IndexError) as err:
            errors.append(f'"model-index" is malformed ({err!r})')
    return errors


def build_app(root: Path, port: int, token: str):
    mirrors = root / "mirrors"
    mirrors.mkdir(parents=True, exist_ok=True)
    config = OlahConfig()
    config.host, config.port, config.offline, config.metadata_cache_ttl = "127.0.0.1", port, True, 0
    config.mirror_netloc = config.mirror_lfs_netloc = f"127.0.0.1:{port}"
    config.mirrors_path, config.repos_path = [str(mirrors)], str(root / "cache")
    app = olah_server.app
    app.state.app_settings = olah_server.AppSettings(config=config)
    app.state.logger = build_logger("olah", "olah.log", logger_dir=str(root / "logs"))
    access_file = root / "access.json"
    base = f"http://127.0.0.1:{port}"

    def access() -> dict[str, dict[str, bool]]:
        return json.loads(access_file.read_text()) if access_file.is_file() else {}

    def set_access(repo_id: str, **flags: bool) -> None:
        table = access()
        table[repo_id] = {**table.get(repo_id, {}), **flags}
        access_file.write_text(json.dumps(table))

    def repo_path(org: str, name: str) -> Path:
        return mirrors / "models" / org / name

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status,
                            headers={"X-Error-Code": code, "X-Error-Message": message})

    def commit_index(repo: git.Repo, message: str) -> str:
        actor = git.Actor("hub", "hub@localhost")
        return repo.index.commit(message, author=actor, committer=actor).hexsha

    router = APIRouter()

    @router.post("/api/repos/create")
    async def create_repo(request: Request):
        body = await request.json()
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        path = repo_path(*repo_id.split("/"))
        if path.exists():  # the Hub's 409 carries the url too
            message = f"You already created this model repo: {repo_id}"
            return JSONResponse({"error": message, "url": f"{base}/{repo_id}"}, status_code=409)
        repo = git.Repo.init(path, initial_branch="main")
        (path / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
        repo.index.add([".gitattributes"])
        commit_index(repo, "initial commit")
        set_access(repo_id, private=body.get("visibility") == "private" or bool(body.get("private")))
        return {"url": f"{base}/{repo_id}", "name": repo_id, "id": repo_id}

    @router.get("/api/models/{org}/{name}")
    @router.head("/api/models/{org}/{name}")
    async def repo_info(org: str, name: str, request: Request):
        """The repo's info at `main` (olah resolves a repo without a revision upstream only)."""
        sha = git.Repo(repo_path(org, name)).heads["main"].commit.hexsha
        return await meta_proxy_common(app, repo_type="models", org=org, repo=name, commit=sha,
                                       method=request.method.lower(), authorization=request.headers.get("authorization"))

    @router.post("/api/models/{org}/{name}/preupload/{rev:path}")
    async def preupload(org: str, name: str, rev: str, request: Request):
        files = (await request.json())["files"]
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}

    @router.post("/api/models/{org}/{name}/commit/{rev:path}")
    async def commit(org: str, name: str, rev: str, request: Request):
        path = repo_path(org, name)
        if not path.is_dir():
            return error(404, "RepoNotFound", f"Repository {org}/{name} not found")
        repo = git.Repo(path)
        if rev not in repo.heads:
            return error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        repo.heads[rev].checkout(force=True)
        summary = ""
        for line in (await request.body()).decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value.get("summary", "")
            elif item["key"] == "file":
                target = path / value["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(value["content"]))
                repo.index.add([value["path"]])
            else:
                return error(400, "BadRequest", f"unsupported commit operation {item['key']!r}")
        sha = commit_index(repo, summary or "commit")
        return {"commitUrl": f"{base}/{org}/{name}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

    @router.post("/api/models/{org}/{name}/branch/{branch:path}")
    async def create_branch(org: str, name: str, branch: str, request: Request):
        repo = git.Repo(repo_path(org, name))
        if branch in repo.heads:
            return error(409, "BranchExists", f"Branch {branch} already exists")
        start = (await request.json() if await request.body() else {}).get("startingPoint") or "main"
        repo.create_head(branch, repo.commit(start))
        return {}

    @router.put("/api/models/{org}/{name}/settings")
    async def settings(org: str, name: str, request: Request):
        body = await request.json()
        flags = {k: bool(body[k]) for k in ("private", "gated") if k in body}
        set_access(f"{org}/{name}", **flags)
        return {}

    @router.post("/api/validate-yaml")
    async def validate_yaml(request: Request):
        errors = validate_metadata((await request.json())["content"])
        return JSONResponse({"errors": [{"message": e} for e in errors], "warnings": []},
                            status_code=400 if errors else 200)

    app.router.routes[:0] = router.routes  # before olah's catch-all file routes

    @app.middleware("http")
    async def check_request(request: Request, call_next):
        """The Hub's answers that olah's offline mode cannot give: 401 for writes without the token and for private
        or gated repos, 404 RepoNotFound / RevisionNotFound / EntryNotFound for a missing repo, revision or file."""
        path = request.url.path
        authorised = request.headers.get("authorization") == f"Bearer {token}"
        if WRITE_ROUTES.match(path) and not authorised:
            return error(401, "Unauthorized", "Invalid credentials in Authorization header")
        match = API_ROUTE.match(path) or RESOLVE_ROUTE.match(path)
        if match is None:
            return await call_next(request)
        repo_id, local = f"{match['org']}/{match['name']}", repo_path(match["org"], match["name"])
        if not local.is_dir():
            return error(404, "RepoNotFound", f"Repository {repo_id} not found")
        flags = access().get(repo_id, {})
        if flags.get("gated") and not authorised:
            return error(401, "GatedRepo", f"Access to model {repo_id} is restricted: you must be authenticated")
        if flags.get("private") and not authorised:
            return error(401, "RepoNotFound", "Repository not found")
        if match["rev"] is not None and match["op"] in READ_OPS:
            rev = unquote(match["rev"])
            try:
                tree = git.Repo(local).commit(rev).tree
            except (ValueError, git.BadName):
                return error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            file = unquote(match["file"] or "").rstrip("/")
            paths = [blob.path for blob in tree.traverse() if blob.type == "blob"]
            if file and file not in paths and not any(path.startswith(file + "/") for path in paths):
                return error(404, "EntryNotFound", f"{file} does not exist on {rev!r}")
        return await call_next(request)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(args.root, args.port, args.token), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
