"""The dashboard's sessions and its defences against cross-site request forgery, through a real
server: a page on another port of the same host (the same site, so SameSite cookies go with it)
cannot act for a logged-in admin; the cookie holds a session id, never the token; sessions end at
logout, expiry and when its token is revoked; ids and form fields out of range are answered, never with a 500; no page runs
an inline script."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.api.conftest import ADMIN, Server, serving, wait_for
from tests.web.conftest import Errors, login

SLOW = "for i in $(seq 1 600); do echo step $i; sleep 0.2; done"
FORGED = "name: forged\ncommand: echo forged\ngpus: 1\ntenant: default\n"
TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "neocloud" / "web" / "templates"


def _running_job(srv: Server) -> int:
    admin = srv.client()
    job = admin.submit({"name": "victim", "command": SLOW, "gpus": 1})
    admin.wait(job["id"], states=("RUNNING",), timeout=30)
    return job["id"]


def _dashboard(srv: Server, token: str = ADMIN) -> tuple[httpx.Client, str]:
    """A client logged in to the dashboard the way a browser is, and its session's CSRF token."""
    http = httpx.Client(base_url=srv.url, timeout=30)
    r = http.post("/ui/login", data={"token": token}, headers={"Origin": srv.url})
    assert r.status_code == 303, r.text
    return http, _csrf(http)


def _csrf(http: httpx.Client, path: str = "/ui/jobs") -> str:
    page = http.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


@contextmanager
def _page_on_another_port(html: str) -> Iterator[str]:
    """A page of another origin of the same host: 127.0.0.1 on a port of its own."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_a_page_on_another_port_cannot_act_for_the_logged_in_admin(browser, shared_server: Server) -> None:  # noqa: ANN001
    server = shared_server
    job_id = _running_job(server)
    admin = server.client()
    jobs_before = len(admin.jobs(limit=1000))
    page = login(browser, server, ADMIN, Errors())
    attack = f"""<!doctype html><title>You won</title>
<iframe name="cancel"></iframe><iframe name="submit"></iframe>
<form id="c" method="post" action="{server.url}/ui/jobs/{job_id}/cancel" target="cancel"></form>
<form id="s" method="post" action="{server.url}/ui/jobs" target="submit">
<textarea name="spec">{FORGED}</textarea><input name="csrf" value="a-guess"></form>
<script>document.getElementById("c").submit(); document.getElementById("s").submit();</script>"""
    with _page_on_another_port(attack) as url, \
            page.expect_response(lambda r: r.url.endswith("/cancel")) as cancelled, \
            page.expect_response(lambda r: r.url.endswith("/ui/jobs") and r.request.method == "POST") as submitted:
        page.goto(url)
    for answer in (cancelled.value, submitted.value):
        assert answer.status == 403
        assert "neocloud_session=" in answer.request.all_headers().get("cookie", "")  # the same site: it went along

    job = admin.job(job_id)
    assert job["state"] == "RUNNING" and not job["cancel_requested"]
    assert len(admin.jobs(limit=1000)) == jobs_before
    wait_for(lambda: {(a["path"], a["status"], a["actor"]) for a in admin.audit(limit=1000)}
             >= {(f"/ui/jobs/{job_id}/cancel", 403, "admin"), ("/ui/jobs", 403, "admin")})

    page.goto(f"/ui/jobs/{job_id}")  # the dashboard's own form, in the same browser, still works
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#state")).to_have_text("CANCELLED", timeout=30_000)


def test_a_post_needs_this_origin_and_the_session_token(server: Server) -> None:
    job_id = _running_job(server)
    admin = server.client()
    jobs_before = len(admin.jobs(limit=1000))
    http, csrf = _dashboard(server)
    other_port = f"http://127.0.0.1:{server.port + 1 if server.port < 65535 else server.port - 1}"
    cancel = f"/ui/jobs/{job_id}/cancel"
    forged = [
        ({"Origin": other_port}, {"csrf": csrf}),  # the right token, from another port
        ({"Origin": server.url.replace("http:", "https:")}, {"csrf": csrf}),  # another scheme
        ({"Origin": "http://localhost:%d" % server.port}, {"csrf": csrf}),  # another host name
        ({"Origin": "null"}, {"csrf": csrf}),  # a sandboxed frame
        ({"Referer": other_port + "/win"}, {"csrf": csrf}),  # no Origin: the Referer's counts
        ({"Origin": server.url}, {}),  # this origin, no token
        ({"Origin": server.url}, {"csrf": csrf[::-1]}),  # a wrong token
        ({"Origin": server.url, "X-CSRF-Token": "nope"}, {}),
        ({}, {}),  # neither header nor token
    ]
    for headers, form in forged:
        for path, fields in ((cancel, {}), ("/ui/jobs", {"spec": FORGED})):
            r = http.post(path, data={**form, **fields}, headers=headers)
            assert r.status_code == 403, (path, headers, form, r.text)
            assert "refused" in r.text.lower() or "CSRF token" in r.text
    job = admin.job(job_id)
    assert job["state"] == "RUNNING" and not job["cancel_requested"]
    assert len(admin.jobs(limit=1000)) == jobs_before
    wait_for(lambda: sum(a["status"] == 403 and a["actor"] == "admin" and a["path"] in (cancel, "/ui/jobs")
                         for a in admin.audit(limit=1000)) == 2 * len(forged))

    r = http.post("/ui/jobs", data={"spec": FORGED, "csrf": csrf}, headers={"Origin": server.url})
    assert r.status_code == 303 and re.fullmatch(r"/ui/jobs/\d+", r.headers["location"])
    assert len(admin.jobs(limit=1000)) == jobs_before + 1
    r = http.post(cancel, headers={"Referer": f"{server.url}/ui/jobs/{job_id}", "X-CSRF-Token": csrf})  # htmx's way
    assert r.status_code == 303
    assert admin.job(job_id)["cancel_requested"]


def test_a_login_must_come_from_this_origin(shared_server: Server) -> None:
    server = shared_server
    http = httpx.Client(base_url=server.url)
    for headers in ({"Origin": "http://127.0.0.1:1"}, {"Referer": "http://evil.example/"}, {}):
        r = http.post("/ui/login", data={"token": ADMIN}, headers=headers)
        assert r.status_code == 403 and "set-cookie" not in r.headers, headers
    r = http.post("/ui/login", data={"token": "nope"}, headers={"Origin": server.url})
    assert r.status_code == 401 and "That token is not known here." in r.text and "set-cookie" not in r.headers
    r = http.post("/ui/login", data={"token": ADMIN, "next": "//evil.example/"}, headers={"Referer": server.url + "/ui/login"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/fleet"


def test_the_cookie_holds_a_session_that_logout_ends(shared_server: Server) -> None:
    server = shared_server
    http = httpx.Client(base_url=server.url)
    r = http.post("/ui/login", data={"token": ADMIN, "next": "/ui/jobs"}, headers={"Origin": server.url})
    assert r.status_code == 303 and r.headers["location"] == "/ui/jobs"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("neocloud_session="))
    attributes = [a.strip().lower() for a in cookie.split(";")]
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert ADMIN not in " ".join(r.headers.get_list("set-cookie")) and len(session_id) >= 40
    assert {"httponly", "samesite=strict", "path=/ui"} <= set(attributes) and "secure" not in attributes
    csrf = _csrf(http)
    assert csrf != session_id

    assert http.post("/ui/logout", headers={"Origin": server.url}).status_code == 403  # no token: not even logout
    assert http.get("/ui/fleet").status_code == 200
    r = http.post("/ui/logout", data={"csrf": csrf}, headers={"Origin": server.url})
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    replay = httpx.Client(base_url=server.url, cookies={"neocloud_session": session_id})  # the old cookie, kept
    r = replay.get("/ui/fleet")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/fleet"
    r = replay.post("/ui/jobs", data={"spec": FORGED, "csrf": csrf}, headers={"Origin": server.url})
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    r = replay.get("/ui/jobs?fragment=1", headers={"HX-Request": "true", "HX-Current-URL": f"{server.url}/ui/jobs"})
    assert r.status_code == 200 and r.headers["hx-redirect"] == "/ui/login?next=/ui/jobs"  # a live table


def test_the_cookie_is_secure_behind_https(shared_server: Server) -> None:
    server = shared_server
    https = server.url.replace("http:", "https:")
    r = httpx.post(f"{server.url}/ui/login", data={"token": ADMIN},
                   headers={"Origin": https, "X-Forwarded-Proto": "https"})  # a TLS proxy on loopback
    assert r.status_code == 303
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("neocloud_session="))
    assert "secure" in [a.strip().lower() for a in cookie.split(";")]


def test_a_session_ends_when_its_time_is_up(tmp_path: Path) -> None:
    with serving(Server(tmp_path / "data", None, env={"NEOCLOUD_UI_SESSION_S": "3"})) as srv:
        http, _ = _dashboard(srv)
        assert http.get("/ui/fleet").status_code == 200
        # Activity does not extend a session past its absolute lifetime.
        wait_for(lambda: http.get("/ui/fleet").status_code == 303, timeout=20, poll=0.2)
        assert http.get("/ui/fleet").headers["location"].startswith("/ui/login")


def test_a_revoked_or_expired_token_ends_its_sessions_at_once(shared_server: Server) -> None:
    server = shared_server
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"})
    assert admin.post("/v1/tenants", json={"name": "acme"}).status_code == 201
    kept = admin.post("/v1/tenants/acme/tokens", json={"label": "dashboard"}).json()
    brief = admin.post("/v1/tenants/acme/tokens", json={"label": "brief", "expires_in": 3}).json()
    http, csrf = _dashboard(server, kept["token"])
    assert '<span class="who">tenant acme</span>' in http.get("/ui/jobs").text
    assert admin.delete(f"/v1/tokens/{kept['id']}").status_code == 200
    r = http.get("/ui/jobs")
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    r = http.post("/ui/jobs", data={"spec": FORGED.replace("default", "acme"), "csrf": csrf},
                  headers={"Origin": server.url})
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    assert admin.get("/v1/jobs", params={"tenant": "acme"}).json() == []

    http, _ = _dashboard(server, brief["token"])
    assert http.get("/ui/jobs").status_code == 200
    wait_for(lambda: http.get("/ui/jobs").status_code == 303, timeout=20, poll=0.2)


def test_failed_logins_are_limited_like_failed_tokens(server: Server) -> None:
    http = httpx.Client(base_url=server.url, headers={"Origin": server.url})
    statuses = [http.post("/ui/login", data={"token": f"guess-{i}"}).status_code for i in range(30)]
    assert statuses[0] == 401 and statuses[-1] == 429
    r = http.post("/ui/login", data={"token": "guess-again"})
    assert r.status_code == 429 and "too many failed authentications" in r.text and int(r.headers["retry-after"]) >= 1
    assert "set-cookie" not in r.headers
    r = http.post("/ui/login", data={"token": ADMIN})  # the right token is never locked out
    assert r.status_code == 303 and "neocloud_session=" in r.headers["set-cookie"]


def test_bad_ids_and_fields_get_an_answer_not_a_500(shared_server: Server) -> None:
    server = shared_server
    http, csrf = _dashboard(server)
    own = {"Origin": server.url}
    for bad in ("99999999999999999999", str(2**31), "0", "-1", "abc", "1e3", "%ED%A0%80", "%F0%9F%98%80"):
        for path in (f"/ui/jobs/{bad}", f"/ui/jobs/{bad}/live"):
            r = http.get(path)
            assert r.status_code == 404 and "no job" in r.text, (path, r.status_code)
        r = http.post(f"/ui/jobs/{bad}/cancel", data={"csrf": csrf}, headers=own)
        assert r.status_code == 404 and "no job" in r.text, (bad, r.status_code)
        r = http.get(f"/ui/nodes/{bad}")
        assert r.status_code == 404 and "no node" in r.text
    assert http.get(f"/ui/nodes/{'n' * 5000}").status_code == 404
    for spec, says in [('name: x\ncommand: "echo \\ud800"\ngpus: 1\n', "surrogate"),
                       ("[" * 50_000, "nested too deeply"), ("&a [*a]", "aliases (*name) are not allowed"),
                       ("name: x\ncommand: echo\ngpus: 1\npriority: 99999999999999999999999\n", "priority")]:
        r = http.post("/ui/jobs", data={"spec": spec, "csrf": csrf}, headers=own)
        assert r.status_code == 422 and says in r.text, (spec[:40], r.status_code, r.text[-500:])
        assert '<p class="error" role="alert">' in r.text
    r = http.post("/ui/capacity", data={"pipeline": 'as_of: "\\udfff"', "csrf": csrf}, headers=own)
    assert r.status_code == 422 and "surrogate" in r.text
    r = http.post("/ui/twin", data={"trace": "../../etc/passwd", "fleet_file": "small.yaml", "policy": "fifo",
                                    "csrf": csrf}, headers=own)
    assert r.status_code == 422 and "pick a trace" in r.text
    for query in ("hours=nan", "hours=inf", "hours=-1", "hours=1e308", "fragment=maybe"):
        assert http.get(f"/ui/performance?{query}").status_code in (200, 422)
    assert "Exception in ASGI application" not in server.log.read_text()


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.html") if p.name != "capacity.html"))
def test_no_page_runs_inline_script(template: str) -> None:
    """The Content-Security-Policy allows scripts from /ui/static only (capacity.html is the report
    `neocloud capacity plan` writes to a file, self-contained to open offline: not a page served here)."""
    text = (TEMPLATES / template).read_text()
    for tag in re.findall(r"<script\b[^>]*>", text, flags=re.IGNORECASE):
        assert re.search(r'\bsrc="/ui/static/[^"]+"', tag) or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+\s*=", text, flags=re.IGNORECASE)  # no onclick= and the like
    assert "hx-on" not in text and "javascript:" not in text and "js:" not in text  # htmx would need eval


def test_a_job_spec_with_yaml_aliases_is_refused_before_it_can_expand(shared_server: Server) -> None:
    server = shared_server
    http, csrf = _dashboard(server)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, n in zip("abcdefg", "bcdefgh"))
    before = len(server.client().jobs(limit=1000))
    r = http.post("/ui/jobs", data={"spec": f"name: bomb\ncommand: 'true'\nenv:\n  X: '1'\nbomb:\n  {bomb}", "csrf": csrf},
                  headers={"Origin": server.url})
    assert r.status_code == 422 and "aliases (*name) are not allowed" in r.text
    assert len(server.client().jobs(limit=1000)) == before
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_a_second_session_cookie_planted_beside_ours_ends_the_session(shared_server: Server) -> None:
    server = shared_server
    admin_http, _ = _dashboard(server)
    server.client().create_tenant("mallory")
    mallory_http, _ = _dashboard(server, server.client().create_token("mallory", "test"))
    theirs = mallory_http.cookies["neocloud_session"]
    ours = admin_http.cookies["neocloud_session"]
    r = httpx.get(f"{server.url}/ui/jobs", headers={"Cookie": f"neocloud_session={theirs}; neocloud_session={ours}"})
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    assert admin_http.get("/ui/jobs").status_code == 200  # alone, each still works
