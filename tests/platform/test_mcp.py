"""The MCP server at /mcp, driven by the official SDK's own client against a real gateway."""

from __future__ import annotations

import json

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import LATEST_HANDSHAKE_VERSION

from tests.platform.conftest import mcp_initialize


def mcp_client(platform_gw, token: str | None, *, mode: str = "auto", cookies: dict[str, str] | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, cookies=cookies, timeout=20)
    return Client(streamable_http_client(platform_gw.url + "/mcp", http_client=http), mode=mode)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_employee_lists_and_calls_the_self_service_tools(platform_gw, mode):
    async with mcp_client(platform_gw, platform_gw.token("alice", ["employees"]), mode=mode) as client:
        tools = await client.list_tools()
        # only what the policy lets alice call is even listed
        assert sorted(t.name for t in tools.tools) == ["explain_access", "list_my_tools"]
        assert all(t.annotations.read_only_hint for t in tools.tools)
        mine = await client.call_tool("list_my_tools", {})
        assert not mine.is_error
        assert [t["id"] for t in mine.structured_content["tools"]] == ["home", "sales", "ops"]
        why = await client.call_tool("explain_access", {"path": "/audit"})
        assert why.structured_content["allowed"] is False and "rules" not in why.structured_content
        # calling a tool the list did not show is refused by policy, and says so
        denied = await client.call_tool("search_audit", {"filters": {"limit": 5}})
        assert denied.is_error and "Access denied" in denied.content[0].text


async def test_an_auditor_searches_and_verifies_the_trail(platform_gw):
    async with mcp_client(platform_gw, platform_gw.token("aud", ["auditors"])) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        assert names == ["explain_access", "list_my_tools", "search_audit", "verify_audit"]
        await client.call_tool("list_my_tools", {})
        found = await client.call_tool("search_audit", {"filters": {"action": "mcp.", "user": "aud", "limit": 3}})
        assert not found.is_error
        events = found.structured_content["events"]
        assert 1 <= len(events) <= 3 and all(e["action"] == "mcp.call" and e["user"] == "aud" for e in events)
        verified = await client.call_tool("verify_audit", {})
        assert verified.structured_content["ok"] is True and verified.structured_content["records"] > 0
        bad = await client.call_tool("search_audit", {"filters": {"since": "not a time"}})
        assert bad.is_error


async def test_every_call_is_audited_with_the_tool_name(platform_gw):
    async with mcp_client(platform_gw, platform_gw.token("mcp-auditee", ["employees"])) as client:
        await client.call_tool("explain_access", {"path": "/ops"})
        await client.call_tool("verify_audit", {})
    ok = platform_gw.wait_audit(lambda e: e["event"]["action"] == "mcp.call" and e.get("user", {}).get("name") == "mcp-auditee"
                                and e["gateway"]["details"]["mcp_tool"] == "explain_access")  # fmt: skip
    assert ok["event"]["outcome"] == "success" and ok["gateway"]["decision"] == "allow"
    assert ok["gateway"]["rule_id"] == "mcp-self-service" and ok["gateway"]["details"]["arguments"] == {"path": "/ops"}
    assert ok["http"]["request"]["id"]  # tied to the HTTP request that carried it
    no = platform_gw.wait_audit(lambda e: e["event"]["action"] == "mcp.call" and e.get("user", {}).get("name") == "mcp-auditee"
                                and e["gateway"]["details"]["mcp_tool"] == "verify_audit")  # fmt: skip
    assert no["event"]["outcome"] == "failure" and no["gateway"]["decision"] == "deny" and no["gateway"]["rule_id"] == "default-deny"


async def test_refused_without_a_token(platform_gw):
    with pytest.raises(Exception):  # noqa: B017,PT011 - the SDK surfaces the 401 as its own error type
        async with mcp_client(platform_gw, None) as client:
            await client.list_tools()
    r = httpx.post(platform_gw.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(Exception):  # noqa: B017,PT011
        async with mcp_client(platform_gw, "not-a-token") as client:
            await client.list_tools()


async def test_a_browser_session_is_not_enough(platform_gw):
    with platform_gw.signed_in("alice") as c:
        r = c.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"x-requested-with": "x", "accept": "application/json, text/event-stream"})  # fmt: skip
        assert r.status_code == 401 and "API tokens only" in r.json()["error"]["message"]
        cookies = dict(c.cookies)
    with pytest.raises(Exception):  # noqa: B017,PT011
        async with mcp_client(platform_gw, None, cookies=cookies) as client:
            await client.list_tools()
    rec = platform_gw.wait_audit(lambda e: e["event"]["action"] == "http.request" and e.get("url", {}).get("path") == "/mcp"
                                 and e.get("event", {}).get("reason") == "mcp_requires_token")  # fmt: skip
    assert rec["user"]["name"] == "alice"


def test_a_session_id_is_useless_with_someone_elses_token(platform_gw):
    session = mcp_initialize(platform_gw, platform_gw.token("alice", ["employees"]))
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    def ask(token: str) -> httpx.Response:
        return httpx.post(platform_gw.url + "/mcp", json=call, timeout=20, headers={
            "authorization": f"Bearer {token}", "mcp-session-id": session, "accept": "application/json, text/event-stream",
            "mcp-protocol-version": LATEST_HANDSHAKE_VERSION})  # fmt: skip

    other = ask(platform_gw.token("sam", ["employees", "security"]))
    assert other.status_code == 404
    own = ask(platform_gw.token("alice", ["employees"]))
    assert own.status_code == 200 and "list_my_tools" in own.text


def test_a_foreign_origin_is_refused(platform_gw):
    r = httpx.post(platform_gw.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={**platform_gw.bearer("alice", ["employees"]), "origin": "https://evil.example"})  # fmt: skip
    assert r.status_code in (403,)
    assert json.loads(r.text)["error"]["code"] == "forbidden"
