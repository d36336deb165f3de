"""The session gate: the login page, logout, and which role reaches which path.

Every request of an app with logins passes `Gate.admit` (an HTTP middleware) before any route:
- `/login`, `/logout` (and their `/vote/` twins, where `gradio_client` logs in) are open;
- `/jobs...` checks its own token (the store folder's `app.json`), for commands run on this machine;
- without a session everything else answers 401 (browsers get the login form with it);
- `/vote/...` and `/vote-image/...` need a role that votes (voter, admin), everything else one that reads
  (reviewer, admin), and the Gradio routes no page uses (`ADMIN_ONLY`) an admin: otherwise 403.
Which Gradio event may change the store is decided in its handler (`AppState.require`), which knows the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from fastapi import Form, Request  # at module level: FastAPI resolves the routes' annotations here

from .access import Account, password_matches
from .sessions import LoginLimiter, Session, SessionConfig, Sessions

COOKIE = "evalsvc-session"
OPEN_PATHS = ("/login", "/logout", "/vote/login", "/vote/logout")
# Gradio routes no page of ours uses: uploads, recordings, monitoring, profiling, run history, dev reloads and
# the "vibe" editor (off unless Gradio runs in that mode). Only an admin reaches them.
ADMIN_ONLY = ("/gradio_api/upload", "/gradio_api/process_recording", "/monitoring", "/gradio_api/monitoring",
              "/gradio_api/profiling", "/gradio_api/run-history", "/gradio_api/dev/", "/gradio_api/vibe-",
              "/gradio_api/undo-vibe-edit")


@dataclass(frozen=True)
class Admission:
    status: int  # 200: admitted
    message: str = ""


def path_area(path: str) -> str:
    """`open`, `token`, `vote` or `main`: which rule of the module's list a path falls under."""
    if path.rstrip("/") in OPEN_PATHS:
        return "open"
    if path == "/jobs" or path.startswith("/jobs/"):
        return "token"
    if path in ("/vote", "/vote/") or path.startswith(("/vote/", "/vote-image/")):
        return "vote"
    return "main"


def admits(account: Account | None, path: str) -> Admission:
    """Whether a request for `path` with `account` (None: no session) may go on, else its status and why."""
    area = path_area(path)
    if area in ("open", "token"):
        return Admission(200)
    if account is None:
        return Admission(401, "log in first")
    inner = path.removeprefix("/vote")
    if inner.startswith(ADMIN_ONLY) and not account.may_act:
        return Admission(403, "only an admin may use this route")
    if area == "vote" and not account.may_vote:
        return Admission(403, "the vote page is for voters: a reviewer sees every checkpoint by name, so a "
                            "reviewer's vote would not be blind")
    if area == "main" and not account.may_read:
        return Admission(403, "a voter's login opens only the vote page, /vote/")
    return Admission(200)


class Gate:
    """Logins and sessions of one app: `accounts` by name."""

    def __init__(self, accounts: dict[str, Account], config: SessionConfig = SessionConfig()):
        self.accounts = accounts
        self.sessions = Sessions(config)
        self.limiter = LoginLimiter(config)

    def session(self, request) -> Session | None:
        """The session of a request's cookie (a Starlette or Gradio request)."""
        return self.sessions.find((getattr(request, "cookies", None) or {}).get(COOKIE))

    def user(self, request) -> str | None:
        """The logged-in name, for Gradio's `auth_dependency`."""
        session = self.session(request)
        return session.user if session else None

    def install(self, app) -> None:
        """The login and logout routes and the admitting middleware on the FastAPI `app`."""
        from fastapi.responses import HTMLResponse, JSONResponse

        @app.middleware("http")
        async def admit(request: Request, call_next):
            session = self.session(request)
            verdict = admits(session.account if session else None, request.url.path)
            if verdict.status == 200:
                request.state.session = session
                return await call_next(request)
            if verdict.status == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(login_page(request.url.path), status_code=401)
            return JSONResponse({"detail": verdict.message}, status_code=verdict.status)

        def show_login(request: Request, next: str = ""):
            return HTMLResponse(login_page(next or "/"))

        def log_in(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("")):
            address = request.client.host if request.client else ""
            if not username or not password:  # nothing guessed: not counted against the name or address
                return HTMLResponse(login_page(next, "Give a name and a password."), status_code=401)
            wait = self.limiter.wait_seconds(username, address)
            if wait > 0:
                return HTMLResponse(login_page(next, f"Too many wrong passwords for this name or from this address; "
                                                     f"try again in {wait:.0f} s."), status_code=429)
            if not password_matches(self.accounts, username, password):
                self.limiter.failed(username, address)
                return HTMLResponse(login_page(next, "Wrong name or password."), status_code=401)
            cookie, session = self.sessions.open(username, self.accounts[username])
            target = landing(session.account, next)
            response = HTMLResponse(f'<!doctype html><meta http-equiv="refresh" content="0; url={escape(target)}">'
                                    f'<p>Logged in. <a href="{escape(target)}">Continue</a></p>')
            response.set_cookie(COOKIE, cookie, max_age=int(self.sessions.config.hours * 3600), httponly=True,
                                samesite="strict", secure=request.url.scheme == "https", path="/")
            return response

        def log_out(request: Request):
            self.sessions.close(request.cookies.get(COOKIE))
            response = HTMLResponse(login_page("/", "Logged out."))
            response.delete_cookie(COOKIE, path="/")
            return response

        for path in ("/login", "/vote/login", "/login/", "/vote/login/"):  # before Gradio's own login routes
            app.get(path, include_in_schema=False)(show_login)
            app.post(path, include_in_schema=False)(log_in)
        for path in ("/logout", "/vote/logout"):
            app.post(path, include_in_schema=False)(log_out)
            app.get(path, include_in_schema=False)(lambda: HTMLResponse(LOGOUT_PAGE))


def landing(account: Account, asked: str) -> str:
    """Where a login goes: the page asked for when it is this site's and the role reaches it, else its home."""
    home = "/" if account.may_read else "/vote/"
    if not asked.startswith("/") or asked.startswith("//") or "\\" in asked:
        return home
    return asked if admits(account, asked).status == 200 and path_area(asked) != "open" else home


PAGE_STYLE = ("body{font-family:system-ui,sans-serif;max-width:22rem;margin:10vh auto;padding:0 1rem}"
              "label,input,button{display:block;width:100%;font-size:1.1rem;margin:.3rem 0}"
              "input,button{padding:.5rem;box-sizing:border-box}.note{color:#b00}")

LOGOUT_PAGE = (f'<!doctype html><meta name="viewport" content="width=device-width"><style>{PAGE_STYLE}</style>'
               '<form method="post" action="/logout"><button type="submit">Log out</button></form>')


def login_page(next_path: str, note: str = "") -> str:
    """The login form; after it, the browser goes to `next_path` (when the role reaches it)."""
    shown = f'<p class="note" role="alert">{escape(note)}</p>' if note else ""
    return (f'<!doctype html><html><head><meta name="viewport" content="width=device-width">'
            f"<title>evalsvc login</title><style>{PAGE_STYLE}</style></head><body><h1>evalsvc</h1>{shown}"
            f'<form method="post" action="/login"><input type="hidden" name="next" value="{escape(next_path)}">'
            '<label for="u">username</label><input id="u" name="username" autocomplete="username" autofocus>'
            '<label for="p">password</label><input id="p" name="password" type="password" '
            'autocomplete="current-password"><button type="submit">Login</button></form></body></html>')


def logout_link() -> str:
    """The Log out button both pages show (a form post: a link could be followed by another site)."""
    return ('<form method="post" action="/logout" style="text-align:right;margin:0">'
            '<button type="submit" class="evs-logout">Log out</button></form>')
