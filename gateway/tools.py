"""The tools registry: the one list of pages both the gateway and ``tools_ui`` use.

The gateway needs the page list to answer unknown paths with a real 404
(Streamlit answers every unknown path with its SPA page and 200) and to map a
request path to the tool the policy speaks about; ``tools_ui`` builds its
``st.navigation`` from the same list, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    id: str  # stable name used in policy files ("sales")
    url_path: str  # the page's URL path without the leading slash ("" for home)
    title: str
    icon: str
    description: str
    script: str  # file under tools_ui/pages/
    contact: str = ""  # whom to ask for access (overridable by policy metadata)

    @property
    def path(self) -> str:
        return "/" + self.url_path


TOOLS: tuple[Tool, ...] = (
    Tool("home", "", "Home", ":material/home:", "Who you are and the tools you can open.", "home.py"),
    Tool("sales", "sales", "Sales", ":material/monitoring:", "Revenue, pipeline and regional sales.", "sales.py", "sales-ops@example.com"),
    Tool("ops", "ops", "Operations", ":material/dns:", "Service latency, error budgets and incidents.", "ops.py", "sre@example.com"),
    Tool("policies", "policies", "Policy editor", ":material/policy:", "Edit, test and roll back access policies.", "policies.py", "security@example.com"),
    Tool("audit", "audit", "Audit viewer", ":material/fact_check:", "Search, verify and export the audit trail.", "audit.py", "security@example.com"),
    Tool("live", "live", "Live security feed", ":material/sensors:", "Denials and sign-in failures as they happen.", "live.py", "security@example.com"),
)

_BY_PATH = {t.path: t for t in TOOLS}
_BY_ID = {t.id: t for t in TOOLS}


def tool_for_path(path: str) -> Tool | None:
    """The tool whose page is at ``path`` (normalised, lower case), if any."""
    p = path.rstrip("/") or "/"
    return _BY_PATH.get(p)


def tool_by_id(tool_id: str) -> Tool | None:
    return _BY_ID.get(tool_id)


def tool_ids() -> frozenset[str]:
    return frozenset(_BY_ID)
