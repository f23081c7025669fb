"""Why a request was allowed or denied, rule by rule; and the safe 403 sentence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .model import Decision, Request
from .rules import tool_title

if TYPE_CHECKING:
    from .engine import Policy


@dataclass(frozen=True)
class RuleVerdict:
    rule_id: str
    effect: str
    file: str
    line: int | None
    matched: bool
    deciding: bool
    reason: str  # the first failing condition in words, or how a match was used

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Explanation:
    request: Request
    decision: Decision
    deciding_rule: RuleVerdict | None  # None for the default deny
    rules: tuple[RuleVerdict, ...]  # every rule, in policy order

    def to_text(self) -> str:
        d = self.decision
        lines = [
            f"request:  {self.request.describe()}",
            f"decision: {d.effect.upper()} ({'allowed' if d.allowed else 'denied'})",
        ]
        if self.deciding_rule is not None:
            lines.append(f"rule:     {d.rule_id} ({self.deciding_rule.where()})")
        else:
            lines.append(f"rule:     {d.rule_id} (no rule matched)")
        lines.append(f"reason:   {d.reason}")
        lines.append(f"policy:   {d.policy_version}")
        lines.append("rules:")
        width = max((len(v.rule_id) for v in self.rules), default=0)
        for v in self.rules:
            mark = "*" if v.deciding else ("+" if v.matched else "-")
            lines.append(f"  {mark} {v.rule_id:<{width}}  {v.effect:<5}  {v.reason}  [{v.where()}]")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "allowed": d.allowed,
            "effect": d.effect,
            "rule_id": d.rule_id,
            "reason": d.reason,
            "policy_version": d.policy_version,
            "rules": [
                {"rule_id": v.rule_id, "effect": v.effect, "file": v.file, "line": v.line, "matched": v.matched, "deciding": v.deciding, "reason": v.reason}
                for v in self.rules
            ],
        }


def explain(policy: "Policy", req: Request) -> Explanation:
    """Decide ``req`` by a full scan and say, for every rule, why it did or did not count."""
    decision = policy.decide_linear(req)
    verdicts = []
    deciding: RuleVerdict | None = None
    for r in policy.rules:
        why = r.why_not(req)
        is_deciding = why is None and r.id == decision.rule_id
        if why is not None:
            reason = f"no match: {why}"
        elif is_deciding:
            reason = "matches and decides" + (" (an explicit deny beats any allow)" if r.deny else "")
        elif not r.deny and not decision.allowed:
            reason = f"matches, but deny rule {decision.rule_id} overrides it"
        else:
            reason = f"matches too; the earlier {r.effect} rule {decision.rule_id} is the one named"
        v = RuleVerdict(r.id, r.effect, r.file, r.line, why is None, is_deciding, reason)
        verdicts.append(v)
        if is_deciding:
            deciding = v
    return Explanation(request=req, decision=decision, deciding_rule=deciding, rules=tuple(verdicts))


def denial_message(policy: "Policy", req: Request, *, default_contact: str = "your security team") -> str:
    """A sentence safe to show on the 403 page: which tool, not granted, whom to ask.

    It names no rule, group or condition (those tell an attacker what to
    forge).  The contact comes from the policy ``[meta] contact`` table, then
    the tool registry, then ``default_contact``.  Plain text: escape it when
    rendering HTML.
    """
    title = tool_title(req.tool)
    contact = policy.contact_for(req.tool) or default_contact
    if title:
        return f"You have not been granted access to {title}. To request access, contact {contact}."
    return f"You have not been granted access to this page. To request access, contact {contact}."
