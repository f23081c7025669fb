"""The policy engine: files in ``policies/`` -> a compiled, indexed, explainable decision.

Typical use in the authorization middleware::

    path = normalize_path(raw_path)            # PathError -> 400
    req = Request.from_identity(identity, path=raw_path, method=method, ip=client_ip)
    decision = store.current.decide(req)       # Decision(allowed, effect, rule_id, reason, policy_version)
    if not decision.allowed:
        text = store.current.denial_message(req, default_contact=settings.server.access_contact)
"""

from .engine import Policy, compile_sources
from .explain import Explanation, RuleVerdict, denial_message, explain
from .loader import DEFAULT_TEST_TIME, FileMeta, TestCase, content_version, parse_sources
from .model import DEFAULT_DENY, Decision, PolicyLoadError, Problem, Request
from .paths import PathError, PathPattern, normalize_path, path_problem
from .sources import check_sources, read_dir, validate_text
from .store import PolicyStore
from .testing import TestReport, TestResult, run_tests


def load_dir(directory, *, known_groups=(), lint: bool = False) -> Policy:  # type: ignore[no-untyped-def]
    """Compile every policy file in ``directory``; PolicyLoadError on any error."""
    from pathlib import Path

    from .engine import compile_parsed

    parsed = parse_sources(read_dir(Path(directory)), known_groups=known_groups)
    return compile_parsed(parsed, lint=lint, where=f"policy directory {directory}")


__all__ = [
    "DEFAULT_DENY",
    "DEFAULT_TEST_TIME",
    "Decision",
    "Explanation",
    "FileMeta",
    "PathError",
    "PathPattern",
    "Policy",
    "PolicyLoadError",
    "PolicyStore",
    "Problem",
    "Request",
    "RuleVerdict",
    "TestCase",
    "TestReport",
    "TestResult",
    "check_sources",
    "compile_sources",
    "content_version",
    "denial_message",
    "explain",
    "load_dir",
    "normalize_path",
    "parse_sources",
    "path_problem",
    "read_dir",
    "run_tests",
    "validate_text",
]
