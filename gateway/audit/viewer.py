"""The audit viewer's server side: one index, integrity monitor and export queue per gateway.

The Streamlit page (``tools_ui/tool_pages/audit.py``) runs in the gateway's
process and reaches this through :func:`viewer_for`.  The feature adds the
one HTTP route the page cannot provide itself: the download of a finished
background export, streamed from disk (a large export would not fit in
Streamlit's in-memory media store), to the user who made it and only while
policy still lets that user open the audit viewer.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.context import get_context
from gateway.errors import error_response
from gateway.features import BaseFeature
from gateway.settings import AuditSettings
from gateway.tools import tool_by_id

from .chain import load_key
from .export import ExportJobs
from .index import AuditIndex, default_cache_dir
from .integrity import IntegrityMonitor

if TYPE_CHECKING:
    from gateway.services import Services

log = structlog.get_logger(__name__)

EXPORT_ROUTE = "/api/audit-export/{job_id}"
EXPORT_PREFIX = "/api/audit-export/"
_JOB_ID = re.compile(r"[0-9a-f]{32}\Z")
# Exports up to this many rows are built while the page waits; larger ones
# run in the background with progress.
SYNC_EXPORT_ROWS = 20_000


class AuditViewer:
    def __init__(self, settings: AuditSettings, emit: Any, *, cache_dir: Path | None = None) -> None:
        self.audit_dir = Path(settings.path).parent
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.audit_dir)
        self.index = AuditIndex(self.audit_dir, base / "index")
        self.integrity = IntegrityMonitor(self.audit_dir, key=lambda: load_key(settings.key_file))
        self.exports = ExportJobs(base / "exports", emit)
        self.sync_export_rows = SYNC_EXPORT_ROWS

    def warm_up(self) -> None:
        """Build (or load) the index and verify once, so the first page view is quick."""
        try:
            self.index.refresh()
            self.integrity.status()
        except Exception:  # noqa: BLE001 - the page builds it again on demand
            log.exception("audit_viewer_warm_up_failed")


@dataclass(frozen=True)
class _Viewer:
    """The bits of a user the page guard's policy question needs."""

    name: str
    email: str
    groups: tuple[str, ...]
    ip: str


class AuditViewerFeature(BaseFeature):
    name = "audit-viewer"

    def __init__(self, services: "Services") -> None:
        self.services = services
        self._viewer: AuditViewer | None = None
        self._lock = threading.Lock()

    @property
    def viewer(self) -> AuditViewer:
        with self._lock:
            if self._viewer is None:
                self._viewer = AuditViewer(self.services.settings.audit, self.services.emit)
            return self._viewer

    def routes(self) -> list[BaseRoute]:
        return [Route(EXPORT_ROUTE, self.download, methods=["GET", "HEAD"])]

    async def start(self) -> None:
        threading.Thread(target=self.viewer.warm_up, name="audit-viewer-warm-up", daemon=True).start()

    async def stop(self) -> None:
        if self._viewer is not None:
            self._viewer.exports.cleanup(everything=True)

    async def download(self, request: Request) -> Response:
        ctx = get_context(request.scope)
        ident = ctx.identity if ctx is not None else None
        if ctx is None or ident is None:
            return error_response(request.scope, 401)
        tool = tool_by_id("audit")
        who = _Viewer(ident.user, ident.email, tuple(sorted(ident.groups)), ctx.client_ip)
        # Policy already allowed this path; the file is also only for someone
        # who may still open the audit viewer itself.
        if tool is None or not self.services.page_allowed(who, tool):
            return error_response(request.scope, 403)
        job_id = request.path_params.get("job_id", "")
        job = self.viewer.exports.get(job_id, ident.user) if _JOB_ID.match(job_id) else None
        if job is None or job.state != "done" or not job.path.exists():
            return error_response(request.scope, 404)
        return FileResponse(
            job.path,
            media_type=job.media_type,
            filename=job.filename,
            headers={"Cache-Control": "no-store"},
        )


def viewer_for(services: "Services") -> AuditViewer:
    """The running gateway's viewer (the feature's), or one made for these services."""
    for feature in services.features:
        if isinstance(feature, AuditViewerFeature):
            return feature.viewer
    with _fallback_lock:
        v = _fallback.get(id(services))
        if v is None:
            v = _fallback[id(services)] = AuditViewer(services.settings.audit, services.emit)
        return v


_fallback: dict[int, AuditViewer] = {}
_fallback_lock = threading.Lock()
