"""The security tools' server side: the live security feed and the audit viewer's downloads.

``security_tools_features(services)`` is what ``gateway.features.build_features``
registers: the live feed (``/ws/security-feed`` and its client script) and the
audit viewer (index, integrity monitor, ``/api/audit-export/<id>``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .feature import CLIENT_PATH, FEED_PATH, LiveFeedFeature
from .hub import FeedHub, category, feed_item

if TYPE_CHECKING:
    from gateway.features import Feature
    from gateway.services import Services

__all__ = ["CLIENT_PATH", "FEED_PATH", "FeedHub", "LiveFeedFeature", "category", "feed_item", "security_tools_features"]


def security_tools_features(services: "Services") -> list["Feature"]:
    from gateway.audit.viewer import AuditViewerFeature

    return [AuditViewerFeature(services), LiveFeedFeature(services)]
