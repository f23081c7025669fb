"""What the gateway's chain costs: bare ``st.App`` against the full gateway.

Both run as real uvicorn processes with the same server settings; ``wrk``
loads each in turn, alternating bare/gateway for several rounds so that
machine noise hits both alike.  The gateway is measured the way people use
it: signed in (a real session cookie from the real sign-in form), with
auditing on.  Prints req/s and p99 per route and the ratio gateway/bare.

Both log one access line per request to a file, as a deployed server does:
bare through uvicorn's access logger (``access_log=False`` is passed, but
Streamlit's logger set-up re-attaches its console handler to
``uvicorn.access`` when the app starts, as for any ``st.App`` under
uvicorn), the gateway through its audit writer's access log (uvicorn's is
off there).  The script checks that each side writes exactly one line per
request before it measures.

    .venv/bin/python benchmarks/chain_overhead.py [--duration 5] [--rounds 3]

Target (issue: foundation): ratio >= 0.90 on both routes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port  # noqa: E402

ROUTES = ("/_stcore/health", "/")

BARE_APP = """
import sys, uvicorn, streamlit as st
app = st.App(sys.argv[2])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), proxy_headers=False, server_header=False,
            access_log=False, log_level="warning", ws="websockets-sansio")
"""


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited early")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server {url} did not start")


def sign_in(base: str, user: str, password: str) -> str:
    """A real session cookie through the real sign-in form."""
    with httpx.Client(base_url=base, follow_redirects=False) as c:
        form = c.get("/auth/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        if token is None:
            raise SystemExit("sign-in form has no csrf_token")
        r = c.post("/auth/login", data={"username": user, "password": password, "csrf_token": token.group(1), "next": "/"})
        if r.status_code not in (302, 303):
            raise SystemExit(f"sign-in failed: {r.status_code}")
        return "; ".join(f"{k}={v}" for k, v in c.cookies.items())


def _pin_load_generator() -> list[str]:
    """``taskset`` wrk to the last CPU, leaving the others to the servers.

    Left free, the scheduler sometimes puts wrk on the server's core for a
    whole round, and the gateway's own rounds then spread by ~20%; pinned,
    they agree within a few percent.  Both servers are measured the same way.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpus[-1])]


def wrk(url: str, duration: int, connections: int, cookie: str | None) -> tuple[float, float]:
    cmd = [*_pin_load_generator(), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if cookie:
        cmd[-1:-1] = ["-H", f"Cookie: {cookie}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99_raw = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_raw.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} error responses; the benchmark would be measuring errors\n{out}")
    return rps, float(p99_raw.group(1)) * scale


def _access_lines(path: Path, marker: str) -> int:
    return sum(1 for line in path.read_text(errors="replace").splitlines() if marker in line)


def _check_access_logs(work: Path, gw: str, bare: str, cookie: str) -> None:
    """Both sides must log exactly one access line per request, or the ratio compares unlike work."""
    probe = "/_stcore/health"
    sides = (
        ("bare", bare, None, work / "bare.log", f'"GET {probe} HTTP/1.1" 200'),
        ("gateway", gw, cookie, work / "gateway.log", '"logger":"gateway.access"'),
    )
    for name, base, ck, path, marker in sides:
        before = _access_lines(path, marker)
        for _ in range(3):
            httpx.get(base + probe, headers={"cookie": ck} if ck else {}, timeout=5).raise_for_status()
        deadline = time.monotonic() + 5
        while _access_lines(path, marker) - before < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        n = _access_lines(path, marker) - before
        if n != 3:
            raise SystemExit(f"{name}: {n} access-log lines for 3 requests; the comparison needs one each")
    print("access log: one line per request on both sides (bare: uvicorn.access; gateway: gateway.access)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk, or `make bench`)")

    work = Path(tempfile.mkdtemp(prefix="toolgate-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        gw_port, bare_port = free_port(), free_port()
        init = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "init", str(work), "--demo", "--port", str(gw_port)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )
        user, password = re.search(r"^\s+(alice)\s+(\S+)$", init.stdout, re.MULTILINE).groups()
        log = (work / "gateway.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(work / "gateway.toml")],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        ))
        bare_log = (work / "bare.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", BARE_APP, str(bare_port), str(ROOT / "tools_ui" / "app.py")],
            cwd=ROOT, stdout=bare_log, stderr=subprocess.STDOUT,
        ))
        gw, bare = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{bare_port}"
        wait_up(gw + "/healthz", procs[0])
        wait_up(bare + "/_stcore/health", procs[1])
        cookie = sign_in(gw, user, password)
        _check_access_logs(work, gw, bare, cookie)

        pin = _pin_load_generator()
        print(
            f"wrk: 1 thread, {args.connections} connections, {args.duration}s x {args.rounds} rounds, alternating"
            + (f", pinned to CPU {pin[-1]}" if pin else "")
        )
        print(f"{'route':<18}{'bare req/s':>12}{'gw req/s':>12}{'ratio':>8}{'bare p99':>11}{'gw p99':>10}   ratio per round")
        for route in ROUTES:
            wrk(bare + route, 1, args.connections, None)  # warm-up
            wrk(gw + route, 1, args.connections, cookie)
            b_rps, g_rps, b_p99, g_p99 = [], [], [], []
            for i in range(args.rounds):
                order = [("bare", bare, None), ("gw", gw, cookie)]
                for name, base, ck in order if i % 2 == 0 else reversed(order):
                    rps, p99 = wrk(base + route, args.duration, args.connections, ck)
                    (b_rps if name == "bare" else g_rps).append(rps)
                    (b_p99 if name == "bare" else g_p99).append(p99)
            br, gr = statistics.median(b_rps), statistics.median(g_rps)
            print(
                f"{route:<18}{br:>12.0f}{gr:>12.0f}{gr / br:>8.2f}"
                f"{statistics.median(b_p99):>9.1f}ms{statistics.median(g_p99):>8.1f}ms"
                # Each round's pair measured back to back: their spread is the
                # machine's noise, which the medians smooth but do not remove.
                f"   {' '.join(f'{g / b:.2f}' for b, g in zip(b_rps, g_rps))}"
            )
        return 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
