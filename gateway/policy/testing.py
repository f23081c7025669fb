"""Run the ``[[test]]`` cases embedded in policy files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .engine import Policy, compile_parsed
from .loader import TestCase, parse_sources
from .model import Decision, PolicyLoadError
from .sources import read_dir


@dataclass(frozen=True)
class TestResult:
    case: TestCase
    decision: Decision
    passed: bool
    message: str = ""

    __test__ = False

    def expected_text(self) -> str:
        c = self.case
        return c.expect + (f" (rule {c.expect_rule})" if c.expect_rule else "")

    def actual_text(self) -> str:
        return f"{self.decision.effect} (rule {self.decision.rule_id})"


@dataclass
class TestReport:
    policy_version: str
    results: list[TestResult] = field(default_factory=list)

    __test__ = False

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def failures(self) -> list[TestResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"

    def format_failures(self, file_prefix: str = "") -> str:
        """pytest-like blocks: where, which test, expected vs actual, deciding rule."""
        out = []
        for r in self.failures:
            c = r.case
            where = f"{file_prefix}{c.file}" + (f":{c.line}" if c.line else "")
            out.append(f"FAILED {where}::{c.name}")
            out.append(f"    request:  {c.request.describe()}")
            out.append(f"    expected: {r.expected_text()}")
            out.append(f"    actual:   {r.actual_text()}")
            out.append(f"    reason:   {r.decision.reason}")
            if r.message:
                out.append(f"    note:     {r.message}")
        return "\n".join(out) + ("\n" if out else "")


def run_case(policy: Policy, case: TestCase) -> TestResult:
    decision = policy.decide(case.request)
    reference = policy.decide_linear(case.request)
    if decision != reference:
        # The index must never change an answer; surface it loudly if it does.
        return TestResult(case, decision, False, f"engine index disagrees with full scan ({reference.effect} by {reference.rule_id})")
    ok = decision.effect == case.expect and (case.expect_rule is None or decision.rule_id == case.expect_rule)
    return TestResult(case, decision, ok)


def run_tests(
    source: Policy | Mapping[str, str | bytes] | Path | str,
    *,
    known_groups: Iterable[str] = (),
    cases: Iterable[TestCase] | None = None,
) -> TestReport:
    """Run every embedded test case (or ``cases``) against the whole policy set.

    ``source`` is a compiled Policy, a file set (name -> text, e.g. the saved
    files plus the editor's draft) or a directory.  Raises PolicyLoadError
    when the set does not parse: validate first with ``validate_text``.
    """
    if isinstance(source, Policy):
        policy = source
    else:
        sources = read_dir(Path(source)) if isinstance(source, (str, Path)) else source
        parsed = parse_sources(sources, known_groups=known_groups)
        if parsed.errors:
            raise PolicyLoadError(parsed.problems)
        policy = compile_parsed(parsed)
    report = TestReport(policy_version=policy.version)
    for case in (policy.tests if cases is None else cases):
        report.results.append(run_case(policy, case))
    return report
