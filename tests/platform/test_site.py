"""The user guide at /docs, /sitemap.xml and /manifest.webmanifest, through a real gateway."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from gateway.site import GUIDE_PAGES, SITE_CSP


def test_the_guide_is_served_with_its_own_strict_headers(platform_gw):
    with platform_gw.signed_in("aud") as c:
        for page in ("/docs", *(f"/docs/{p}" for p in GUIDE_PAGES)):
            r = c.get(page)
            assert r.status_code == 200, page
            assert r.headers["content-type"].startswith("text/html")
            assert r.headers["content-security-policy"] == SITE_CSP
            assert "script" not in SITE_CSP
            assert r.headers["x-robots-tag"] == "noindex, nofollow"
            assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
            assert "<script" not in r.text and " style=" not in r.text
        assert c.get("/docs/assets/site.css").headers["content-type"].startswith("text/css")
        assert c.get("/docs/nope.html").status_code == 404


def test_guide_pages_revalidate_with_their_etag(platform_gw):
    with platform_gw.signed_in("alice") as c:
        first = c.get("/docs/policies.html")
        etag = first.headers["etag"]
        again = c.get("/docs/policies.html", headers={"if-none-match": etag})
        other = c.get("/docs/audit.html", headers={"if-none-match": etag})
        head = c.head("/docs")
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert again.headers["content-security-policy"] == SITE_CSP
    assert other.status_code == 200 and other.headers["etag"] != etag
    assert head.status_code == 200 and head.content == b""


def test_every_page_shares_one_layout_and_marks_itself_in_the_contents():
    from gateway.site.guide import CONTENTS, page_path, pages

    rendered = pages()
    navs = set()
    for name, title in CONTENTS:
        text = rendered[name].body.decode()
        assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
        assert f"<title>{title} · Toolgate user guide</title>" in text
        assert text.count("<main>") == 1 and text.count("</main>") == 1 and text.count("<h1>") == 1
        current = re.findall(r'<a href="([^"]+)" aria-current="page">', text)
        assert current == [page_path(name)], name
        navs.add(re.search(r"<nav.*?</nav>", text).group(0).replace(' aria-current="page"', ""))
    assert len(navs) == 1, "every page lists the same contents"


def test_every_link_in_the_guide_works(platform_gw):
    seen: set[str] = set()
    with platform_gw.signed_in("alice") as c:
        for page in ("/docs", *(f"/docs/{p}" for p in GUIDE_PAGES)):
            text = c.get(page).text
            for target in re.findall(r'(?:href|src)="(/[^"#?]*)', text):
                if target in seen:
                    continue
                seen.add(target)
                r = c.get(target)
                # /api/v1/docs needs no more than a signed-in employee; the sign-in pages redirect when signed in
                assert r.status_code in (200, 303), (page, target, r.status_code)
    assert "/docs/deployment.html" in seen and "/manifest.webmanifest" in seen


def test_the_guide_covers_sign_in_policies_audit_and_deployment(platform_gw):
    with platform_gw.signed_in("alice") as c:
        assert "Signing out" in c.get("/docs/sign-in.html").text
        assert "expect_rule" in c.get("/docs/policies.html").text
        assert "gateway audit verify" in c.get("/docs/audit.html").text
        text = c.get("/docs/deployment.html").text
    assert "trusted_proxies" in text and "[alerts]" in text and "metrics_networks" in text


def test_sitemap_lists_only_what_i_may_open(platform_gw):
    with platform_gw.signed_in("alice") as c:
        r = c.get("/sitemap.xml")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    assert r.headers["x-robots-tag"] == "noindex, nofollow"
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locs = [e.text for e in ET.fromstring(r.content).findall("s:url/s:loc", ns)]
    base = platform_gw.settings.server.public_url
    assert base + "/sales" in locs and base + "/docs" in locs and base + "/api/v1/docs" in locs
    assert base + "/audit" not in locs and base + "/policies" not in locs


def test_robots_forbids_indexing_and_does_not_advertise_the_sitemap(platform_gw):
    r = platform_gw.client().get("/robots.txt")
    assert "Disallow: /" in r.text.splitlines() and "sitemap" not in r.text.lower()


def test_manifest_has_the_brand_icons(platform_gw):
    with platform_gw.signed_in("alice") as c:
        r = c.get("/manifest.webmanifest")
        assert r.status_code == 200 and r.headers["content-type"] == "application/manifest+json"
        m = r.json()
        assert m["start_url"] == "/" and m["scope"] == "/" and m["display"] == "standalone"
        assert {"192x192", "512x512"} <= {i["sizes"] for i in m["icons"]}
        for icon in m["icons"]:
            got = c.get(icon["src"])
            assert got.status_code == 200 and got.headers["content-type"].startswith(icon["type"]), icon
            if icon["type"] == "image/png":
                assert got.content[:8] == b"\x89PNG\r\n\x1a\n"
                w, h = (int.from_bytes(got.content[16:20], "big"), int.from_bytes(got.content[20:24], "big"))
                assert f"{w}x{h}" == icon["sizes"]
