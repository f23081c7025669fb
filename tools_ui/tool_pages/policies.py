"""Policy editor: edit, validate, test, simulate, preview the impact of, save and roll back policies."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import streamlit as st

try:
    from tools_ui import access
except ModuleNotFoundError:  # run as a script: Streamlit puts only the main script's folder on sys.path
    sys.path.append(str(Path(__file__).resolve().parents[2]))
    from tools_ui import access

from gateway import runtime  # noqa: E402
from gateway.policy import PolicyLoadError  # noqa: E402
from gateway.policy.history import ConflictError, PolicyHistory, sha256_text, unified_diff  # noqa: E402
from gateway.policy.impact import replay  # noqa: E402
from gateway.policy.sources import check_file_name  # noqa: E402
from gateway.tools import tool_by_id  # noqa: E402
from tools_ui.editor import policy as ed  # noqa: E402

NEW = "➕ New file…"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "WEBSOCKET"]

user = access.current_user()
services = runtime.maybe_current()

# ---------------------------------------------------------------- who may be here

if services is None or not ed.can_change(user):
    # The page guard normally stops everyone else before this script runs; this
    # holds even if a policy edit opened the page to another group.
    if services is not None:
        services.emit(
            "page.denied", outcome="failure", user=user.name or None, email=user.email or None, groups=list(user.groups),
            client_ip=user.ip or None, tool="policies", path="/policies", decision="deny",
            rule_id="policy-editor-security-only", reason="the policy editor is for group security only (never auditors)",
        )  # fmt: skip
    st.title("Access not granted")
    if user.signed_in:
        st.error(f"You are signed in as **{user.name}**, but changing policies is reserved for the security team.")
        tool = tool_by_id("policies")
        contact = (services.access_contact(tool) if services is not None and tool else "") or "your security team"
        st.write(f"To request access, contact {contact}.")
    else:
        st.error("You are not signed in.")
    st.stop()

store = services.policy
pdir = Path(store.dir)
history = PolicyHistory(pdir)
known_groups = store.known_groups
ss = st.session_state
ss.setdefault("pe.base", {})  # file -> {"text", "sha"}: the file as the editor opened it
ss.setdefault("pe.out", {})  # file -> what the last button produced
ss.setdefault("pe.conflict", {})  # file -> {"base", "theirs", "yours"}
ss.setdefault("pe.sim", None)
ss.setdefault("pe.impact", None)
ss.setdefault("pe.keep", {})  # widget key -> its value when it was last drawn or set


# Streamlit forgets a widget's value on a run that does not draw it (another
# tab is open), so drafts and messages are kept beside their widgets.  They are
# not assigned back on every run: each assignment is pushed to the browser, and
# a run that started before the user's last keystroke reached the server would
# overwrite what they typed (a Save then went out with an empty message).
def value(key: str, default: str = "") -> str:
    """A kept widget's value: live while it is on the page, else what it last held."""
    return ss[key] if key in ss else ss["pe.keep"].get(key, default)


def put(key: str, text: str) -> None:
    """Set a kept widget's value (from a callback: the page shows it on this run)."""
    ss[key] = text
    ss["pe.keep"][key] = text


def kept(draw: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """Draw a widget whose value survives runs that do not draw it."""
    if key not in ss and key in ss["pe.keep"]:
        ss[key] = ss["pe.keep"][key]  # refill only a widget coming back onto the page
    out = draw(*args, key=key, **kwargs)
    ss["pe.keep"][key] = out
    return out


def draft_key(fn: str) -> str:
    return f"pe.draft::{fn}"


def open_file(fn: str, *, force: bool = False) -> None:
    """Remember the file as it is on disk now (the optimistic lock's base) and load it into the editor."""
    if fn in ss["pe.base"] and not force:
        return
    text, sha = ed.opened(pdir, fn) if fn != NEW else (ed.NEW_FILE_TEMPLATE, None)
    ss["pe.base"][fn] = {"text": text if sha else "", "sha": sha}
    put(draft_key(fn), text)


def target_name(fn: str) -> str:
    return value("pe.newname").strip() if fn == NEW else fn


def result(fn: str, kind: str, **data: Any) -> None:
    ss["pe.out"][fn] = {"kind": kind, "draft_sha": sha256_text(value(draft_key(fn))), **data}


def test_result(fn: str, c: Any, **extra: Any) -> None:
    """Record a draft check with its policy-test report (``c``: what ed.run_draft_tests returned)."""
    r = c.report
    result(fn, "test", errors=c.errors, warnings=c.warnings, summary=r.summary() if r else "", ok=c.ok,
           failures=r.format_failures() if r else "", total=len(r.results) if r else 0, **extra)  # fmt: skip


# ---------------------------------------------------------------- actions (callbacks run before the page)


def do_validate(fn: str) -> None:
    name = target_name(fn)
    if check_file_name(name):
        result(fn, "name", message=check_file_name(name))
        return
    c = ed.validate(pdir, name, value(draft_key(fn)), known_groups)
    result(fn, "validate", errors=c.errors, warnings=c.warnings)


def do_test(fn: str) -> None:
    name = target_name(fn)
    if check_file_name(name):
        result(fn, "name", message=check_file_name(name))
        return
    test_result(fn, ed.run_draft_tests(pdir, name, value(draft_key(fn)), known_groups))


def do_diff(fn: str) -> None:
    name = target_name(fn)
    in_force = store.current.sources.get(name, "")
    result(fn, "diff", diff=unified_diff(in_force, value(draft_key(fn)), name or "new.toml", "in force", "draft"))


def do_discard(fn: str) -> None:
    open_file(fn, force=True)
    ss["pe.conflict"].pop(fn, None)
    result(fn, "info", message="Your draft was replaced by the file as it is on disk now.")


def do_save(fn: str) -> None:
    name = target_name(fn)
    draft = value(draft_key(fn))
    message = value(f"pe.msg::{fn}").strip()
    if check_file_name(name):
        result(fn, "name", message=check_file_name(name))
        return
    if not message:
        result(fn, "refused", message="Describe the change in the message box before saving.")
        return
    c = ed.run_draft_tests(pdir, name, draft, known_groups)
    if not c.ok:
        test_result(fn, c, blocked=True)
        return
    base = ss["pe.base"][fn]
    try:
        res = ed.save_as(access.current_user(), services, name, draft, base_sha=base["sha"], message=message)
    except ed.NotPermitted as exc:
        result(fn, "refused", message=str(exc))
        return
    except ConflictError as exc:
        ss["pe.conflict"][fn] = {"base": base["text"], "theirs": exc.theirs, "yours": draft, "file": name}
        result(fn, "conflict")
        return
    except (PolicyLoadError, ValueError) as exc:
        result(fn, "refused", message=str(exc))
        return
    ss["pe.conflict"].pop(fn, None)
    put(f"pe.msg::{fn}", "")
    if fn == NEW:
        ss["pe.base"][name] = {"text": draft, "sha": sha256_text(draft)}
        put(draft_key(name), draft)
        ss["pe.file"] = name
        ss["pe.base"].pop(NEW, None)
        fn = name
    else:
        ss["pe.base"][fn] = {"text": draft, "sha": sha256_text(draft)}
    if res.changed:
        result(fn, "saved", old=res.old_version.label if res.old_version else "new file", new=res.new_version.label,
               policy=res.policy_version, diff=res.diff)  # fmt: skip
    else:
        result(fn, "info", message="Nothing to save: the draft is what is on disk.")


def take_theirs(fn: str) -> None:
    do_discard(fn)
    result(fn, "info", message="Their version is in the editor now. Re-apply your change and save again.")


def keep_mine(fn: str) -> None:
    name = target_name(fn)
    text, sha = ed.opened(pdir, name)
    ss["pe.base"][fn] = {"text": text, "sha": sha}
    ss["pe.conflict"].pop(fn, None)
    result(fn, "info", message="Your draft is kept and now based on their version: saving will replace their change. Check the diff first.")


def do_rollback(fn: str, number: int) -> None:
    message = value(f"pe.rbmsg::{fn}").strip()
    base = ss["pe.base"][fn]
    try:
        res = ed.rollback_as(access.current_user(), services, fn, number, base_sha=base["sha"], message=message)
    except ed.NotPermitted as exc:
        result(fn, "refused", message=str(exc))
        return
    except ConflictError as exc:
        ss["pe.conflict"][fn] = {"base": base["text"], "theirs": exc.theirs, "yours": value(draft_key(fn)), "file": fn}
        result(fn, "conflict")
        return
    except (PolicyLoadError, ValueError, KeyError) as exc:
        result(fn, "refused", message=f"Rollback to v{number} refused: {exc}")
        return
    text, sha = ed.opened(pdir, fn)
    ss["pe.base"][fn] = {"text": text, "sha": sha}
    put(draft_key(fn), text)
    put(f"pe.rbmsg::{fn}", "")
    if res.changed:
        result(fn, "saved", old=res.old_version.label if res.old_version else "", new=res.new_version.label,
               policy=res.policy_version, diff=res.diff, rollback_of=f"v{number}")  # fmt: skip
    else:
        result(fn, "info", message=f"v{number} is what is on disk already.")


# ---------------------------------------------------------------- header

status = store.status()
st.title("Policy editor")
loaded = dt.datetime.fromtimestamp(status["loaded_at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
st.caption(
    f"In force: policy **{status['policy_version']}**, {len(status['files'])} files, {status['rules']} rules, loaded {loaded}. "
    "Changes apply on the next request, without a restart."
)
if status["last_error"]:
    st.error(f"The files on disk were rejected; the last good policy keeps serving. {status['last_error']}", icon=":material/error:")

files = sorted(p.name for p in pdir.glob("*.toml") if not p.name.startswith("."))
if ss.get("pe.file") not in [*files, NEW]:
    ss["pe.file"] = files[0] if files else NEW
fn = st.selectbox("Policy file", [*files, NEW], key="pe.file")
open_file(fn)
name = target_name(fn)
if fn == NEW:
    kept(st.text_input, "pe.newname", "New file name", placeholder="50-team.toml")

tabs = st.tabs(["Edit", "Simulate", "Impact preview", "History", "All rules"], key="pe.tab", on_change="rerun")
t_edit, t_sim, t_impact, t_hist, t_rules = tabs

# ---------------------------------------------------------------- edit


def show_problems(errors: list, warnings: list, draft: str) -> None:
    here, elsewhere = ed.problems_in(errors, name)
    for p in here:
        st.error(f"**Line {p.line}**: {p.message}" if p.line else p.message, icon=":material/error:")
        if p.line:
            st.code(ed.excerpt(draft, p.line), language=None)
    for p in elsewhere:
        st.error(f"**{p.file}{':' + str(p.line) if p.line else ''}** (another file, checked with your draft): {p.message}", icon=":material/error:")
    for p in warnings:
        st.warning(f"{'Line ' + str(p.line) + ': ' if p.line and p.file == name else str(p.file) + ': '}{p.message}", icon=":material/warning:")


def show_output(fn: str, draft: str) -> None:
    out = ss["pe.out"].get(fn)
    if not out:
        return
    stale = out["draft_sha"] != sha256_text(draft) and out["kind"] not in ("saved", "info")
    if stale:
        st.caption("The draft changed since this result; run the check again.")
    kind = out["kind"]
    if kind == "name":
        st.error(out["message"])
    elif kind == "validate":
        if not out["errors"]:
            st.success("Valid: the draft parses and loads together with the other files." + (" Lint warnings below." if out["warnings"] else ""), icon=":material/check_circle:")
        show_problems(out["errors"], out["warnings"], draft)
    elif kind == "test":
        if out.get("blocked"):
            st.error("**Not saved.** The draft must validate and pass every policy test first.", icon=":material/block:")
        if out["errors"]:
            show_problems(out["errors"], out["warnings"], draft)
        elif out["ok"]:
            st.success(f"Policy tests: {out['summary']} (every [[test]] of every file, with your draft in place).", icon=":material/check_circle:")
        else:
            st.error(f"Policy tests: {out['summary']}.", icon=":material/error:")
            st.code(out["failures"], language=None, wrap_lines=True)
    elif kind == "diff":
        if out["diff"]:
            st.markdown("**Diff against the policy in force**")
            st.code(out["diff"], language="diff")
        else:
            st.info("No changes: the draft is what is in force.")
    elif kind == "saved":
        what = f"Rolled back to {out['rollback_of']}" if out.get("rollback_of") else "Saved"
        st.success(f"{what}: {out['old']} → **{out['new']}**. Policy **{out['policy']}** is in force now.", icon=":material/task_alt:")
        with st.expander("What changed"):
            st.code(out["diff"] or "(no change)", language="diff")
    elif kind == "conflict":
        st.error("**Not saved: the file changed on disk since you opened it.** Compare below and merge by hand.", icon=":material/sync_problem:")
    elif kind == "refused":
        st.error(out["message"], icon=":material/block:")
    elif kind == "info":
        st.info(out["message"])


def show_conflict(fn: str) -> None:
    c = ss["pe.conflict"].get(fn)
    if not c:
        return
    diffs = ed.three_way(c["base"], c["theirs"], c["yours"], c["file"])
    with st.container(border=True, key="pe-conflict"):
        st.markdown(f"#### :material/call_split: Three-way view of {c['file']}")
        st.caption("Base: the file when you opened it. Theirs: the file on disk now. Yours: your draft.")
        a, b = st.columns(2)
        with a:
            st.markdown("**Their change** (base → theirs)")
            st.code(diffs["theirs"] or "(no change)" if c["theirs"] is not None else "(the file was deleted)", language="diff")
        with b:
            st.markdown("**Your change** (base → yours)")
            st.code(diffs["yours"] or "(no change)", language="diff")
        with st.expander("Full texts: base, theirs, yours"):
            x, y, z = st.tabs(["Base", "Theirs", "Yours"])
            x.code(c["base"] or "", language="toml", line_numbers=True)
            y.code(c["theirs"] or "", language="toml", line_numbers=True)
            z.code(c["yours"], language="toml", line_numbers=True)
        row = st.container(horizontal=True)
        row.button("Load theirs into the editor", on_click=take_theirs, args=(fn,), icon=":material/download:")
        row.button("Keep my draft (overwrite theirs)", on_click=keep_mine, args=(fn,), icon=":material/upload:")


if t_edit.open is not False:
    with t_edit:
        # A fixed slot for the on-disk notices: a notice that appeared above the
        # widgets would shift them, and Streamlit remounts shifted widgets,
        # dropping whatever was typed but not yet applied.
        notice = st.container()
        base = ss["pe.base"][fn]
        draft = value(draft_key(fn))
        on_disk_sha = sha256_text(ed.disk_text(pdir, name)) if name and not check_file_name(name) else None
        if fn != NEW and on_disk_sha != base["sha"] and draft == base["text"] and fn not in ss["pe.conflict"]:
            # Nothing of yours to lose: follow the file (someone saved it elsewhere).
            open_file(fn, force=True)
            base, draft = ss["pe.base"][fn], value(draft_key(fn))
            notice.info(f"{fn} was changed on disk by someone else; the editor now shows the new version.", icon=":material/sync:")
        elif fn != NEW and on_disk_sha != base["sha"] and fn not in ss["pe.conflict"]:
            notice.warning(f"**{fn} changed on disk since you opened it.** Saving will be refused until you reconcile.", icon=":material/sync_problem:")
        draft = kept(st.text_area, draft_key(fn), "Policy text", height=440, help="TOML: [meta], [[rule]] and [[test]] tables. See policies/README.md.")
        in_force = store.current.sources.get(name)
        if draft == base["text"] and fn != NEW:
            st.caption(":green[●] No unsaved changes." + ("" if in_force == draft else " (The file on disk differs from the policy in force: it was rejected.)"))
        else:
            st.caption(":orange[●] Unsaved changes.")
        row = st.container(horizontal=True)
        row.button("Validate", on_click=do_validate, args=(fn,), icon=":material/rule:")
        row.button("Run tests", on_click=do_test, args=(fn,), icon=":material/science:")
        row.button("Show diff", on_click=do_diff, args=(fn,), icon=":material/difference:")
        row.button("Discard my changes", on_click=do_discard, args=(fn,), icon=":material/undo:", disabled=fn == NEW)
        with st.container(border=True):
            kept(st.text_input, f"pe.msg::{fn}", "Change message", placeholder="Why this change? (recorded with your name in the history and the audit trail)")
            st.button("Save", type="primary", on_click=do_save, args=(fn,), icon=":material/save:")
            st.caption("Saving validates the draft and runs every policy test first; it is refused if the file changed on disk since you opened it.")
        show_output(fn, draft)
        show_conflict(fn)

# ---------------------------------------------------------------- simulate

if t_sim.open:
    with t_sim:
        st.caption("Ask the draft (and the policy in force) about one request, and see every rule's verdict.")
        now = dt.datetime.now(dt.UTC)
        with st.form("pe.simform", border=True):
            a, b, c = st.columns(3)
            s_user = a.text_input("User", value="alice")
            s_groups = b.text_input("Groups (comma-separated)", value="employees")
            s_email = c.text_input("Email", value="")
            a, b, c = st.columns(3)
            s_path = a.text_input("Path", value="/ops")
            s_method = b.selectbox("Method", METHODS)
            s_ip = c.text_input("Client IP", value="", placeholder="10.1.2.3")
            a, b, _ = st.columns(3)
            s_date = a.date_input("Date (UTC)", value=now.date())
            s_time = b.time_input("Time (UTC)", value=now.time().replace(second=0, microsecond=0))
            submitted = st.form_submit_button("Simulate", type="primary", icon=":material/play_arrow:")
        if submitted:
            try:
                at = dt.datetime.combine(s_date, s_time, tzinfo=dt.UTC)
                req = ed.simulated_request(user=s_user, groups=s_groups, email=s_email, path=s_path, method=s_method, ip=s_ip, at=at)
            except ValueError as exc:
                ss["pe.sim"] = {"error": f"That request cannot be asked: {exc}"}
            else:
                out: dict[str, Any] = {"now": store.current.explain(req)}
                try:
                    out["draft"] = ed.compile_draft(pdir, name, value(draft_key(fn)), known_groups).explain(req)
                except PolicyLoadError as exc:
                    out["draft_error"] = str(exc)
                ss["pe.sim"] = out
        sim = ss["pe.sim"]
        if sim and "error" in sim:
            st.error(sim["error"])
        elif sim:
            a, b = st.columns(2)
            for col, label, ex in ((a, "In force", sim["now"]), (b, "Draft", sim.get("draft"))):
                with col.container(border=True):
                    if ex is None:
                        st.markdown(f"**{label}**: the draft does not load")
                        continue
                    d = ex.decision
                    badge = ":green-badge[:material/check: ALLOW]" if d.allowed else ":red-badge[:material/block: DENY]"
                    st.markdown(f"**{label}**: {badge} by `{d.rule_id}`")
                    st.caption(d.reason)
            if sim.get("draft_error"):
                st.error(sim["draft_error"])
            shown = sim.get("draft") or sim["now"]
            st.markdown("**Explanation** (" + ("draft" if sim.get("draft") else "in force") + ")")
            st.code(shown.to_text(), language=None)

# ---------------------------------------------------------------- impact

if t_impact.open:
    with t_impact:
        st.caption(
            "Replays the decisions recorded in the audit trail (page loads, API calls and refused page switches) "
            "against your draft, and lists who would lose or gain access compared with the policy in force."
        )
        row = st.container(horizontal=True, vertical_alignment="bottom")
        days = row.number_input("Days of history", min_value=1, max_value=90, value=7, step=1)
        if row.button("Preview impact", type="primary", icon=":material/query_stats:"):
            try:
                draft_policy = ed.compile_draft(pdir, name, value(draft_key(fn)), known_groups)
            except PolicyLoadError as exc:
                ss["pe.impact"] = {"error": str(exc)}
            else:
                with st.spinner("Replaying the audit trail…"):
                    rep = replay(draft_policy, store.current, [Path(services.settings.audit.path).parent], days=float(days))
                ss["pe.impact"] = {"report": rep, "days": days, "file": name}
        imp = ss["pe.impact"]
        if imp and "error" in imp:
            st.error("The draft does not load; fix it first.\n\n" + imp["error"])
        elif imp:
            rep = imp["report"]
            with st.container(key="pe-impact"):
                m = st.columns(4)
                m[0].metric("Decisions replayed", f"{rep.replayed:,}", border=True)
                m[1].metric("Would change", f"{rep.flipped:,}", border=True)
                m[2].metric("Lose access (user, tool)", len(rep.lose), border=True)
                m[3].metric("Gain access (user, tool)", len(rep.gain), border=True)
                st.caption(f"Last {imp['days']} days, draft of {imp['file']}. " + (f"{rep.skipped} records could not be replayed. " if rep.skipped else "")
                           + (f"{rep.recorded_differs} recorded decisions differ from what the policy in force says now (earlier changes)." if rep.recorded_differs else ""))  # fmt: skip
                if not rep.flips:
                    st.success("No recorded request would be decided differently by the draft.", icon=":material/check_circle:")
                else:
                    st.table(
                        [
                            {
                                "User": f.user,
                                "Tool": (tool_by_id(f.target).title if tool_by_id(f.target) else f.target),
                                "Change": f.change,
                                "Requests": f.count,
                                "Rule now": f.rule_now,
                                "Rule in draft": f.rule_draft,
                                "Last seen": f.last_seen[:19].replace("T", " "),
                            }
                            for f in rep.flips[:200]
                        ],
                        hide_index=True,
                    )

# ---------------------------------------------------------------- history

if t_hist.open:
    with t_hist:
        if fn == NEW:
            st.info("A new file has no history yet.")
        else:
            rows = ed.history_rows(history, fn, sha256_text(ed.disk_text(pdir, fn)))
            if not rows:
                st.info(f"No saved versions of {fn} yet. The first save records the file as it is now as v1, so it can be rolled back to.")
            else:
                st.table(rows, hide_index=True)
                st.caption("● marks the version on disk now.")
                versions = [v.number for v in reversed(history.versions(fn))]
                pick = st.selectbox("Version", versions, format_func=lambda n: f"v{n}", key=f"pe.pick::{fn}")
                try:
                    old_text = history.read(fn, pick)
                except (OSError, ValueError, KeyError) as exc:
                    st.error(f"v{pick} cannot be read: {exc}")
                else:
                    current = ed.disk_text(pdir, fn) or ""
                    d = unified_diff(current, old_text, fn, "on disk", f"v{pick}")
                    st.markdown(f"**Rolling back to v{pick} would change:**")
                    st.code(d or "(nothing: v%d is what is on disk)" % pick, language="diff")
                    with st.container(border=True):
                        kept(st.text_input, f"pe.rbmsg::{fn}", "Rollback message", placeholder=f"roll back to v{pick}")
                        st.button(f"Roll back to v{pick}", type="primary", on_click=do_rollback, args=(fn, pick), icon=":material/history:")
                        st.caption("A rollback is a save: validated, tested, locked against concurrent edits, and audited.")
        show_output(fn, value(draft_key(fn)))

# ---------------------------------------------------------------- overview

if t_rules.open:
    with t_rules:
        st.markdown("**Files in force**")
        st.table(ed.files_overview(store.current), hide_index=True)
        st.markdown("**Rules in force**, in evaluation order")
        st.dataframe(ed.rules_table(store.current), hide_index=True, width="stretch")
