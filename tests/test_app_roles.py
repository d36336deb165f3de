"""Roles and sessions: every route and every Gradio event of the app, called as nobody, a voter, a reviewer and
an admin; one session per login for both pages, logout, expiry, and the login rate limit."""

from __future__ import annotations

import json
import re
import secrets

import httpx
import pytest

from conftest import APP_USERS, app_accounts, serve_app

OPEN = {"/login", "/logout", "/vote/login", "/vote/logout"}
UNUSED_BY_PAGES = ("/gradio_api/upload", "/gradio_api/process_recording", "/monitoring", "/gradio_api/run-history",
                   "/gradio_api/dev/", "/gradio_api/vibe-", "/gradio_api/undo-vibe-edit")  # admins only
GATE = re.compile(r'"detail":"(log in first|only an admin may use this route|the vote page is for voters|'
                  r"a voter's login opens only the vote page)")
ROLE_REFUSAL = re.compile(r"^error: only (an admin|a voter or an admin|a reviewer or an admin) may ")


@pytest.fixture(scope="module")
def app_and_url(short_demo, tmp_path_factory):
    """(FastAPI app, URL, store) of the app with APP_USERS on a copy of the short demo. The app object is a second
    one built on the same state: only its routes and events are read from it."""
    import shutil

    from evalsvc.app.server import AppConfig, AppState, build_app
    from evalsvc.store import open_store

    root = tmp_path_factory.mktemp("roles") / "store"
    shutil.copytree(short_demo[0], root, ignore=shutil.ignore_patterns("lock"))
    with open_store(root) as store, serve_app(store, APP_USERS) as url:
        yield build_app(AppState(store, AppConfig(), app_accounts(APP_USERS))), url, store


def _login(url: str, user: str | None) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=120)
    if user is not None:
        response = client.post("login", data={"username": user, "password": APP_USERS[user]})
        assert response.status_code == 200, response.text
    return client


def _routes(app, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every route of `app` and of the apps mounted in it (Gradio's pages), path parameters
    filled with a placeholder."""
    from starlette.routing import Mount

    found = []
    for route in getattr(app, "routes", ()):
        if isinstance(route, Mount):
            found += _routes(route.app, prefix + route.path)
            continue
        included = getattr(route, "include_context", None)  # FastAPI's included router (Gradio's /gradio_api)
        if included is not None:
            found += _routes(route.original_router, prefix + included.prefix)
            continue
        path = prefix + re.sub(r"\{[^}]+\}", "1", getattr(route, "path", ""))
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD":
                found.append((method, path or "/"))
    return sorted(set(found))


def _status(client: httpx.Client, method: str, path: str) -> tuple[int, str]:
    """The status and the start of the body; streaming answers (server-sent events) are not read to their end."""
    try:
        with client.stream(method, path.lstrip("/"), **({"json": {}} if method != "GET" else {})) as response:
            body = b""
            if "text/event-stream" not in response.headers.get("content-type", ""):
                body = response.read()[:300]
            return response.status_code, body.decode("utf-8", "replace")
    except httpx.ReadTimeout:
        return 200, "(stream)"


def _area(path: str) -> str:
    if path.rstrip("/") in OPEN:
        return "open"
    if path.startswith("/jobs"):
        return "token"
    return "vote" if path.startswith(("/vote/", "/vote-image/")) or path == "/vote" else "main"


def test_every_route_answers_each_role_as_the_roles_say(app_and_url):
    app, url, _ = app_and_url
    routes = _routes(app)
    assert ("GET", "/vote/config") in routes and ("POST", "/gradio_api/queue/join") in routes
    assert ("GET", "/vote-image/1") in routes and len(routes) > 60
    clients = {user: _login(url, user) for user in (None, "ann", "rita", "ada")}
    wrong = []
    for method, path in sorted(routes, key=lambda route: "logout" in route[1]):  # logging out last
        area = _area(path)
        admin_only = path.removeprefix("/vote").startswith(UNUSED_BY_PAGES)
        for user, client in clients.items():
            status, body = _status(client, method, path)
            gated = status in (401, 403) and bool(GATE.search(body))
            if area == "open":
                ok = not gated
            elif area == "token":
                ok = status == 401 and not gated  # the route's own check: no job token, whoever asks
            elif user is None:
                ok = gated and status == 401
            elif user == "ann":  # voter
                ok = gated == (area == "main" or admin_only)
            elif user == "rita":  # reviewer
                ok = gated == (area == "vote" or admin_only)
            else:
                ok = not gated
            if not ok:
                wrong.append((user, method, path, status, body[:80]))
    assert wrong == [], wrong


def _fns(app) -> dict[str, list]:
    """Every Gradio event of each page with a server function: {"/": [BlockFunction...], "/vote": [...]}."""
    from starlette.routing import Mount

    pages = {}
    for route in app.routes:
        if isinstance(route, Mount) and hasattr(route.app, "get_blocks"):
            blocks = route.app.get_blocks()
            pages[route.path or "/"] = [(fn_id, fn, blocks) for fn_id, fn in blocks.fns.items() if fn.fn is not None]
    return pages


def _defaults(blocks, fn) -> list:
    """The inputs' values as the page starts (what a click with nothing chosen sends)."""
    values = {c["id"]: c.get("props", {}).get("value") for c in blocks.config["components"]}
    return [values.get(component._id) for component in fn.inputs]


def _call(client: httpx.Client, page: str, fn_id: int, data: list) -> tuple[int, str]:
    """Run one event as the browser does (queue/join, then its event stream): (join status, outcome text)."""
    base = page.rstrip("/") + "/gradio_api/"
    session = secrets.token_hex(8)
    joined = client.post(base.lstrip("/") + "queue/join", json={"data": data, "event_data": None, "fn_index": fn_id,
                                                                "trigger_id": None, "session_hash": session})
    if joined.status_code != 200:
        return joined.status_code, joined.text[:200]
    with client.stream("GET", base.lstrip("/") + "queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed":
                output = message.get("output") or {}
                return 200, "ok" if message.get("success") else f"error: {output.get('error')}"
    return 200, "no outcome"


def _table_counts(store) -> dict[str, int]:
    db = store.db.cursor()
    try:
        tables = [t for t, in db.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        db.close()


def test_every_event_of_each_page_answers_each_role_as_the_roles_say(app_and_url):
    """Voters reach only the vote page's events, reviewers every main-page event but none that writes (the store
    is unchanged after all of them), admins everything; without a session every event is refused (401)."""
    app, url, store = app_and_url
    pages = _fns(app)
    assert {"/", "/vote"} <= set(pages) and len(pages["/"]) > 20
    named = {fn.api_name for _, fn, _ in pages["/"]}
    assert {"decide", "queue_job", "grid", "curves", "compare"} <= named
    clients = {user: _login(url, user) for user in (None, "ann", "rita", "ada")}
    before = _table_counts(store)
    outcomes: dict[tuple, tuple[int, str]] = {}
    for user in (None, "ann", "rita"):
        for page, fns in pages.items():
            for fn_id, fn, blocks in fns:
                outcomes[(user, page, fn.api_name or fn_id)] = _call(clients[user], page, fn_id, _defaults(blocks, fn))
    after = _table_counts(store)
    assert after == {**before, "vote_pairs": after["vote_pairs"]}, (before, after)  # only the voter's pairs
    reviewer_changes = _table_counts(store)
    for page, fns in pages.items():
        for fn_id, fn, blocks in fns:
            outcomes[("ada", page, fn.api_name or fn_id)] = _call(clients["ada"], page, fn_id, _defaults(blocks, fn))
    wrong = []
    for (user, page, name), (status, text) in outcomes.items():
        refused = bool(ROLE_REFUSAL.match(text))
        if user is None:
            ok = status == 401
        elif user == "ann":
            ok = (status == 403) if page == "/" else (status == 200 and not refused)
        elif user == "rita":
            writes = name in ("decide", "queue_job", "cancel_job") or refused
            ok = (status == 403) if page == "/vote" else (status == 200 and refused == writes)
        else:
            ok = status == 200 and not refused
        if not ok:
            wrong.append((user, page, name, status, text[:100]))
    assert wrong == [], wrong
    refused_writes = {name for (user, page, name), (_, text) in outcomes.items()
                      if user == "rita" and text.startswith("error: only an admin")}
    assert {"decide", "queue_job"} <= refused_writes
    assert reviewer_changes["decisions"] == before["decisions"] and reviewer_changes["jobs"] == before["jobs"]


def test_one_login_opens_both_pages_and_logging_out_ends_it(app_and_url):
    _, url, _ = app_and_url
    admin = _login(url, "ada")
    assert admin.get("config").status_code == 200 and admin.get("vote/config").status_code == 200
    cookie = admin.cookies["evalsvc-session"]
    assert admin.post("logout").status_code == 200
    replay = httpx.Client(base_url=url, cookies={"evalsvc-session": cookie})
    assert replay.get("config").status_code == 401 and replay.get("vote/config").status_code == 401
    voter = _login(url, "bob")
    page = voter.get("", headers={"accept": "text/html"})
    assert page.status_code == 403  # a voter's login opens the vote page only
    assert httpx.get(url, headers={"accept": "text/html"}).status_code == 401  # the login form, with 401


def test_sessions_expire():
    from evalsvc.app.access import Account
    from evalsvc.app.sessions import SessionConfig, Sessions

    now = [1000.0]
    sessions = Sessions(SessionConfig(hours=8), clock=lambda: now[0])
    cookie, session = sessions.open("ann", Account("pw"))
    assert sessions.find(cookie) == session
    now[0] += 8 * 3600 - 1
    assert sessions.find(cookie) == session
    now[0] += 2
    assert sessions.find(cookie) is None and sessions.find(cookie) is None


def test_wrong_passwords_are_limited_per_name_and_per_address(app_and_url):
    _, url, _ = app_and_url
    client = httpx.Client(base_url=url)
    for _ in range(5):
        assert client.post("login", data={"username": "bob", "password": "wrong"}).status_code == 401
    limited = client.post("login", data={"username": "bob", "password": APP_USERS["bob"]})
    assert limited.status_code == 429 and "Too many wrong passwords" in limited.text  # even the right one waits
    assert "evalsvc-session" not in limited.cookies
    assert client.post("login", data={"username": "rita", "password": APP_USERS["rita"]}).status_code == 200
    for i in range(15):  # 20 wrong from one address, over several names, block every name from it
        client.post("login", data={"username": f"nobody{i}", "password": "wrong"})
    assert client.post("login", data={"username": "ada", "password": APP_USERS["ada"]}).status_code == 429


def test_a_login_goes_back_only_to_a_page_of_this_app_its_role_reaches():
    from evalsvc.app.access import Account
    from evalsvc.app.gate import landing

    voter, reviewer = Account("pw", "voter"), Account("pw", "reviewer")
    assert landing(voter, "/") == "/vote/" and landing(voter, "/vote/") == "/vote/"
    assert landing(reviewer, "/?tab=grid") == "/?tab=grid" and landing(reviewer, "/vote/") == "/"
    for hostile in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)", "/logout"):
        assert landing(reviewer, hostile) == "/"
