"""The audit viewer's integrity badge and export panel."""

from __future__ import annotations

import datetime as dt
import re
from functools import partial
from typing import Any

import streamlit as st

from gateway.audit.export import FORMATS, audited_export, export_bytes, file_name
from gateway.audit.index import Filters, View
from gateway.audit.viewer import EXPORT_PREFIX, AuditViewer
from tools_ui.access import PageUser

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _hhmmss(ts: float | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%H:%M:%S UTC")


# ------------------------------------------------------------------ integrity


def _verify_now() -> None:
    st.session_state["audit_verify_now"] = True


def integrity_badge(viewer: AuditViewer) -> None:
    @st.fragment(run_every=10)
    def badge() -> None:
        first = "audit_integrity_seen" not in st.session_state
        st.session_state["audit_integrity_seen"] = True
        # Opening the page (or the button) checks the files as they are now.
        force = bool(st.session_state.pop("audit_verify_now", False)) or first
        status = viewer.integrity.status(force=force, wait=5.0 if (force or first) else 0.3)
        with st.container(border=True, key="audit_integrity"):
            left, right = st.columns([6, 1], vertical_alignment="center")
            with left:
                p = status.problem
                if status.state == "ok":
                    n = len(status.files)
                    chains = f" across {len(status.chains)} chains" if len(status.chains) > 1 else ""
                    st.badge("Chain intact", icon=":material/verified_user:", color="green")
                    st.markdown(
                        f"All **{status.records:,}** records in **{n}** file{'s' if n != 1 else ''}{chains} "
                        "verify against the audit key: nothing was edited, removed or reordered."
                    )
                elif status.state in ("broken", "incomplete") and p is not None:
                    where = f"{p.file.name}:{p.line}" if p.line else p.file.name
                    label = "Chain broken" if status.state == "broken" else "Trail incomplete"
                    st.badge(label, icon=":material/gpp_bad:", color="red" if status.state == "broken" else "orange")
                    st.markdown(f"First bad record: **`{md_escape(where)}`** ({p.kind}): {md_escape(p.message)}")
                    if status.state == "incomplete":
                        st.caption("A torn last line is what a crash mid-write leaves; it is not evidence of editing.")
                elif status.state == "unavailable":
                    st.badge("Cannot verify", icon=":material/error:", color="orange")
                    st.markdown(md_escape(status.error or "verification failed"))
                else:
                    st.badge("Verifying…", icon=":material/hourglass_top:", color="gray")
                    st.markdown("Checking the chain of every record; this takes about 2 s per million records.")
                note = f"Verified at {_hhmmss(status.checked_at)}."
                if status.running:
                    note += " Re-checking now…"
                elif not status.current:
                    note += " Newer records are checked within a few seconds."
                if status.warnings:
                    note += f" {len(status.warnings)} note{'s' if len(status.warnings) != 1 else ''} in the details."
                st.caption(note)
            right.button("Verify now", icon=":material/refresh:", on_click=_verify_now, key="audit_verify_btn")
            if status.chains:
                with st.expander("Verification details"):
                    for c in status.chains:
                        r = c.result
                        name = f"Chain `{md_escape(c.name)}`: " if c.name else ""
                        span = f"seq {r.first_seq}–{r.last_seq}" if r.first_seq is not None else "no records"
                        after = f", continuing after `{md_escape(r.starts_after[0])}` seq {r.starts_after[1]}" if r.starts_after else ""
                        verdict = "intact" if r.ok else f"**{r.problem.kind}** at `{md_escape(r.problem.file.name)}:{r.problem.line}`" if r.problem else ""
                        st.markdown(f"- {name}{r.records:,} records ({span}{after}) in {len(r.files)} files: {verdict}")
                        if r.files:
                            st.caption("Files in chain order: " + ", ".join(md_escape(f.name) for f in r.files))
                    for w in status.warnings:
                        st.markdown(f"- note `{md_escape(w.file.name)}:{w.line}` **{w.kind}**: {md_escape(w.message)}")

    badge()


# ------------------------------------------------------------------ export


def _export_now(view: View, fmt: str, filters: dict[str, Any], user: PageUser, emit: Any) -> bytes:
    """Runs when the download button is clicked (Streamlit's deferred download), not when it is drawn."""
    data, rows = export_bytes(view, fmt)
    audited_export(emit, fmt, rows, filters, owner=user.name, client_ip=user.ip or None, groups=list(user.groups))
    return data


def export_panel(viewer: AuditViewer, view: View, filters: Filters, user: PageUser, emit: Any) -> None:
    st.subheader("Export the filtered view")
    choice = st.segmented_control("Format", ["CSV", "JSONL"], default="CSV", key="audit_export_fmt") or "CSV"
    fmt = choice.lower()
    if fmt == "csv":
        st.caption(
            "One row per event with the fields shown in the table, plus file and line. Cells a spreadsheet would run "
            "as a formula are prefixed with ' ; the JSONL export holds the exact records."
        )
    else:
        st.caption("The original records, byte for byte, chain values included, in chain order.")
    rows = view.rows
    if rows == 0:
        st.info("No events match these filters, so there is nothing to export.")
        return
    described = filters.describe()
    if rows <= viewer.sync_export_rows:
        st.download_button(
            f"Download {rows:,} events as {choice}",
            data=partial(_export_now, view, fmt, described, user, emit),
            file_name=file_name(fmt),
            mime=FORMATS[fmt][0],
            on_click="ignore",
            icon=":material/download:",
            type="primary",
            key=f"audit_export_dl_{fmt}",
        )
        st.caption("Each download is recorded in the audit trail (audit.exported) with these filters.")
        return
    background_export(viewer, view, fmt, described, user)


def background_export(viewer: AuditViewer, view: View, fmt: str, described: dict[str, Any], user: PageUser) -> None:
    jobs = viewer.exports
    job_id = st.session_state.get("audit_export_job")
    job = jobs.get(job_id, user.name) if job_id else None
    running = job is not None and job.state == "running"
    st.caption(f"{view.rows:,} events: the export is written in the background; you can keep using the page.")
    if st.button(f"Start {fmt.upper()} export of {view.rows:,} events", icon=":material/play_arrow:", type="primary", disabled=running, key="audit_export_start"):
        try:
            job = jobs.start(view, fmt, owner=user.name, filters=described, audit_fields={"client_ip": user.ip or None, "groups": list(user.groups)})
        except RuntimeError as exc:
            st.error(str(exc))
            return
        st.session_state["audit_export_job"] = job.id
    if job is None:
        return

    @st.fragment(run_every=1.0 if job.state == "running" else None)
    def progress() -> None:
        j = jobs.get(job.id, user.name)
        if j is None:
            st.caption("The export expired.")
            return
        if j.state == "running":
            st.progress(j.fraction, text=f"Exporting… {j.done:,} of {j.total:,} events")
        elif j.state == "done":
            st.progress(1.0, text=f"Done: {j.rows:,} events ({j.fmt.upper()})")
            st.link_button(f"Download {j.filename}", EXPORT_PREFIX + j.id, icon=":material/download:", type="primary")
            st.caption("Available to you for an hour. The export is recorded in the audit trail (audit.exported).")
            if st.session_state.get("audit_export_shown") != j.id:
                st.session_state["audit_export_shown"] = j.id
                st.rerun(scope="app")  # stop polling
        else:
            st.error(f"The export failed: {j.error}")

    progress()
