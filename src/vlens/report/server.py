"""`vlens serve`: a local viewer to browse every sample of a run (starlette + uvicorn).

The tables are read once into memory as numpy arrays; each request filters and sorts them
vectorised and returns one page as JSON, so 100,000 samples page as fast as 100. The
server binds 127.0.0.1 by default, answers only to loopback Host headers unless told
otherwise, and serves only files inside the run directory (plus each sample's own image
from the `uri` column, looked up by row, never by a path from the request).
"""

from __future__ import annotations

import ipaddress
import math
import mimetypes
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from vlens.errors import ConfigError
from vlens.report.build import _cards, environment, static_assets
from vlens.report.load import (
    VIEWER_SKIP,
    RunData,
    load_run_data,
    numeric_columns,
    xai_cells,
)
from vlens.report.safety import PathRefused, resolve_inside

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
KINDS = {"o": "uri", "ov": "view_overlay", "m": "view_masked", "c": "view_crop"}
MAX_PER_PAGE = 500
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


class BadQuery(ValueError):
    """A query parameter is invalid (answered with HTTP 400 and the message)."""


class ViewerIndex:
    """The run's tables as arrays, ready for vectorised filtering, sorting and paging."""

    def __init__(self, run: RunData) -> None:
        self.run = run
        df = run.samples
        self.n = len(df)
        self.ids = df["id"].to_numpy(dtype=object)
        self.label = df["label"].to_numpy(dtype=object) if "label" in df else np.full(
            self.n, None, dtype=object)
        self.pred = df["pred"].to_numpy(dtype=object) if "pred" in df else np.full(
            self.n, None, dtype=object)
        if "correct" in df:
            c = df["correct"]
            self.correct = np.where(c.isna(), -1, c.fillna(False).astype(bool)).astype(np.int8)
        else:
            self.correct = np.full(self.n, -1, np.int8)
        self.status = df["status"].to_numpy(dtype=object) if "status" in df else None
        # Sortable scores: per-sample numeric columns, then concept and grounding scores.
        self.scores: dict[str, np.ndarray] = {
            c: df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in numeric_columns(df)}
        self.concepts: list[str] = []
        for prefix, tab in (("concept", run.concepts), ("grounding", run.grounding)):
            if tab is None:
                continue
            for c in tab.columns:
                self.scores[f"{prefix}:{c}"] = tab[c].to_numpy(dtype=np.float64)
                if prefix == "concept":
                    self.concepts.append(c)
        self.focus = self.scores.get("focus_score", np.full(self.n, np.nan))
        self.groups, self.group_names = self._groups(run)
        self.classes = run.classes
        self._row_of = pd.Index(self.ids)

    def _groups(self, run: RunData) -> tuple[dict[str, np.ndarray], list[list[str]]]:
        """Boolean masks for slices, findings' evidence and XAI cells, by a generated key."""
        idx = pd.Index(run.samples["id"].astype(str))
        groups, names = {}, []

        def add(prefix: str, title: str, ids: object) -> None:
            key = f"{prefix}{len(groups)}"
            rows = idx.get_indexer([str(i) for i in ids]) if isinstance(ids, list) else []
            m = np.zeros(self.n, bool)
            rows = np.asarray(rows, dtype=np.int64)
            m[rows[rows >= 0]] = True
            groups[key] = m
            names.append([key, title, int(m.sum())])

        fj = run.findings

        def items(key: str) -> list:
            v = fj.get(key)
            return v if isinstance(v, list) else []

        for s in items("slices"):
            if isinstance(s, dict):
                add("s", f"slice: {s.get('name', '')}", s.get("sample_ids"))
        for f in items("findings"):
            if isinstance(f, dict):
                ev = f.get("evidence") if isinstance(f.get("evidence"), dict) else {}
                add("f", f"finding {f.get('id', '')}: {f.get('title', '')}",
                    ev.get("sample_ids"))
        for name, cell in ((xai_cells(run) or {}).get("cells") or {}).items():
            if isinstance(cell, dict):
                add("x", f"XAI cell: {name}", cell.get("sample_ids"))
        for p in items("confusion_pairs"):
            if isinstance(p, dict):
                add("p", f"confusion: {p.get('true')} → {p.get('pred')}", p.get("sample_ids"))
        return groups, names

    # -- queries --------------------------------------------------------------------------
    def query(self, q: dict[str, str]) -> dict:
        """Filter, sort and page. Raises BadQuery with a clear message on bad parameters."""
        m = np.ones(self.n, bool)
        if q.get("cls"):
            m &= self.label == q["cls"]
        if q.get("pred"):
            m &= self.pred == q["pred"]
        corr = q.get("correct", "")
        if corr in ("true", "false"):
            m &= self.correct == (1 if corr == "true" else 0)
        elif corr:
            raise BadQuery("correct must be 'true' or 'false'")
        fmin, fmax = _float(q, "fmin"), _float(q, "fmax")
        if fmin is not None:
            m &= self.focus >= fmin
        if fmax is not None:
            m &= self.focus <= fmax
        if q.get("group"):
            if q["group"] not in self.groups:
                raise BadQuery(f"unknown group {q['group']!r}")
            m &= self.groups[q["group"]]
        if q.get("concept"):
            key = f"concept:{q['concept']}"
            if key not in self.scores:
                raise BadQuery("unknown concept")
            cmin = _float(q, "cmin")
            m &= self.scores[key] >= (0.5 if cmin is None else cmin)
        if q.get("status"):
            if self.status is None:
                raise BadQuery("this run has no status column")
            m &= self.status == q["status"]
        rows = np.flatnonzero(m)
        sort = q.get("sort", "")
        if sort:
            if sort not in self.scores:
                raise BadQuery(f"cannot sort by {sort!r}")
            v = self.scores[sort][rows]
            desc = q.get("order", "desc") != "asc"
            key = np.where(np.isnan(v), np.inf, -v if desc else v)  # NaN always last
            rows = rows[np.argsort(key, kind="stable")]
        per_page = _int(q, "per_page", 60)
        page = _int(q, "page", 1)
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise BadQuery(f"per_page must be between 1 and {MAX_PER_PAGE}")
        if page < 1:
            raise BadQuery("page must be >= 1")
        total = len(rows)
        pages = max(1, math.ceil(total / per_page))
        chunk = rows[(page - 1) * per_page: page * per_page]
        return {"total": total, "page": page, "pages": pages, "per_page": per_page,
                "items": [self.item(int(r)) for r in chunk]}

    def item(self, r: int) -> dict:
        f = self.focus[r]
        conf = self.scores.get("confidence")
        return {"row": r, "id": str(self.ids[r]), "label": _s(self.label[r]),
                "pred": _s(self.pred[r]),
                "correct": None if self.correct[r] < 0 else bool(self.correct[r]),
                "focus": None if np.isnan(f) else round(float(f), 2),
                "conf": None if conf is None or np.isnan(conf[r]) else round(float(conf[r]), 3),
                "img": {"o": f"/img/{r}/o"}}

    def card(self, r: int) -> dict:
        c = _cards_nocopy(self.run, r)
        c["img"] = {k: f"/img/{r}/{k}" for k in ("o", "ov", "m")}
        c["row"] = r
        return c

    def meta(self) -> dict:
        info = self.run.findings.get("run")
        name = info.get("name") if isinstance(info, dict) else None
        return {"n": self.n, "classes": self.classes, "concepts": self.concepts,
                "sort": sorted(self.scores), "groups": self.group_names,
                "has_status": self.status is not None,
                "name": str(name or self.run.run_dir.resolve().name)}

    def image_path(self, r: int, kind: str) -> Path:
        """The file for image `kind` of row `r`, or PathRefused."""
        col = KINDS.get(kind)
        df = self.run.samples
        if col is None or col not in df or not 0 <= r < self.n:
            raise PathRefused("no such image")
        v = df[col].iat[r]
        if not isinstance(v, str) or not v:
            raise PathRefused("no such image")
        if kind == "o":
            p = Path(v)
            if not p.is_absolute():
                p = resolve_inside(self.run.run_dir, v)
            if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
                raise PathRefused("not an image file")
            return p
        return resolve_inside(self.run.run_dir, v)


def _cards_nocopy(run: RunData, r: int) -> dict:
    """The report's card data for one row, without copying images."""
    c = _cards(run, {r: f"s{r}"}, img_dir=None)
    return c[f"s{r}"]


def _s(v: object) -> str | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _float(q: dict, name: str) -> float | None:
    v = q.get(name, "")
    if v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        raise BadQuery(f"{name} must be a number") from None
    if not math.isfinite(f):
        raise BadQuery(f"{name} must be finite")
    return f


def _int(q: dict, name: str, default: int) -> int:
    v = q.get(name, "")
    if v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise BadQuery(f"{name} must be an integer") from None


def create_app(run_dir: str | Path, allowed_hosts: list[str] | None = None) -> Starlette:
    """The viewer as an ASGI app (tests use it directly)."""
    run_dir = Path(run_dir)
    index = ViewerIndex(load_run_data(run_dir, skip=VIEWER_SKIP))
    env = environment()
    assets = static_assets("viewer")
    page = env.get_template("viewer.html.j2").render(meta=index.meta(), **assets)

    def headers(extra: dict | None = None) -> dict:
        return SECURITY_HEADERS | (extra or {})

    async def home(request: Request) -> Response:
        csp = (f"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
               f"connect-src 'self'; script-src 'sha256-{assets['js_hash']}'")
        return HTMLResponse(page, headers=headers({"Content-Security-Policy": csp}))

    async def samples(request: Request) -> Response:
        try:
            return JSONResponse(index.query(dict(request.query_params)), headers=headers())
        except BadQuery as e:
            return JSONResponse({"error": str(e)}, status_code=400, headers=headers())

    async def sample(request: Request) -> Response:
        r = _row(request.path_params["row"], index.n)
        if r is None:
            return JSONResponse({"error": "no such sample"}, status_code=404, headers=headers())
        return JSONResponse(index.card(r), headers=headers())

    async def image(request: Request) -> Response:
        r = _row(request.path_params["row"], index.n)
        try:
            if r is None:
                raise PathRefused("no such sample")
            p = index.image_path(r, request.path_params["kind"])
        except PathRefused as e:
            return Response(str(e), status_code=404, media_type="text/plain", headers=headers())
        return _file(p, headers())

    async def files(request: Request) -> Response:
        # The raw path, so '%2e%2e' and '..' reach the check undecoded-and-decoded alike.
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        rel = raw.split("?", 1)[0][len("/files/"):] if raw.startswith("/files/") else \
            request.path_params["path"]
        try:
            p = resolve_inside(run_dir, rel)
        except PathRefused as e:
            return Response(str(e), status_code=404, media_type="text/plain", headers=headers())
        return _file(p, headers())

    async def meta(request: Request) -> Response:
        return JSONResponse(index.meta(), headers=headers())

    routes = [Route("/", home), Route("/api/meta", meta), Route("/api/samples", samples),
              Route("/api/sample/{row}", sample), Route("/img/{row}/{kind}", image),
              Route("/files/{path:path}", files)]
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "testserver"]
    app = Starlette(routes=routes,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])
    app.state.index = index
    return app


def _row(v: str, n: int) -> int | None:
    try:
        r = int(v)
    except ValueError:
        return None
    return r if 0 <= r < n else None


def _file(p: Path, hdrs: dict) -> Response:
    mt = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    if mt in ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml"):
        # Served as an attachment-like plain file so no document from the run runs script
        # under the viewer's origin (report/index.html opens from disk instead).
        hdrs = hdrs | {"Content-Security-Policy": "sandbox"}
    return FileResponse(p, media_type=mt, headers=hdrs)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the viewer with uvicorn until interrupted. Warns loudly on a non-loopback host."""
    import uvicorn

    if not 0 < port < 65536:
        raise ConfigError(f"port must be 1-65535, got {port}")
    loop = is_loopback(host)
    hosts = None if loop else ["*"]
    app = create_app(run_dir, allowed_hosts=hosts)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    print(f"vlens viewer for {run_dir}: {url}  ({app.state.index.n} samples)", flush=True)
    if loop:
        print(f"Bound to {host} (loopback): only this machine can connect.", flush=True)
    else:
        print(f"WARNING: bound to {host}, not loopback: anyone who can reach this machine "
              "can browse this run (images, captions, findings). Use --host 127.0.0.1 "
              "unless you mean it.", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
