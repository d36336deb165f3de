"""The app's process: it owns the store, serves images through two checked routes and mounts the Gradio UI.

Routes besides Gradio's:
- `/image/{name}`: a store image by its content address (`files.resolve_image` decides), for the grid;
- `/vote-image/{token}`: the image behind an open vote pair's opaque image id, for the session the pair was
  issued to only, re-encoded as a PNG without any metadata (no infotext, no file name) and with invisible
  noise of its own (`vote_png`), so nothing in its bytes or URL names the checkpoint;
- `POST /jobs`, `GET /jobs/{id}`: queue work and follow it, for commands run while the app owns the store;
  they need the token the app wrote into the store folder (`evalsvc.owner`), not a voter's login.

With logins (`--auth`), every route passes the session gate first (`evalsvc.app.gate`: one session per login
for both pages, roles voter / reviewer / admin). Every request handler works on its own DuckDB cursor of the
one connection (`AppState.cursor`).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request  # at module level: FastAPI resolves the route's annotations here

from ..errors import InputError
from ..scoring.audit import TrainingNeighbours
from ..votes import VoteConfig
from .access import LOCAL_ACCOUNT, LOCAL_USER, Account
from .grid import AxesCache
from .sessions import SessionConfig


@dataclass(frozen=True)
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    auth_file: Path | None = None
    run: str | None = None  # the run shown first and voted on (default: the first run)
    rows_per_page: int = 6
    workers: int = 1  # threads running queued sampling and scoring jobs
    vote: VoteConfig = field(default_factory=VoteConfig)
    allowed_hosts: tuple[str, ...] = ()  # names besides localhost and `host` the app answers (`--allowed-host`)
    internal_runs: bool = False  # list the runs `regress` makes for itself in the run chooser (`--all-runs`)
    sessions: SessionConfig = field(default_factory=SessionConfig)  # expiry and login limits (`--session-hours`)

    def host_names(self) -> list[str]:
        """Every name a request's Host header may carry: another one is answered 400 (DNS rebinding)."""
        local = ["127.0.0.1", "localhost", "::1", "[::1]"]
        bound = [] if self.host in ("0.0.0.0", "::", "") else [self.host]
        return list(dict.fromkeys([*local, *bound, *self.allowed_hosts]))


class AppState:
    """The open store, the logins (`accounts` by name; None: one local admin) and what every handler needs."""

    def __init__(self, store, config: AppConfig, accounts: dict[str, Account] | None = None):
        from ..jobs import JobWorkers
        from .gate import Gate

        self.store, self.config = store, config
        self.gate = Gate(accounts, config.sessions) if accounts else None
        self.images = store.layout.images
        self.grid_axes = AxesCache()  # each run's grid axis values, read again when the run changes
        self.neighbours = TrainingNeighbours()  # an enlarged image's nearest training images
        self.workers = JobWorkers(store, config.workers)
        self.job_token: str | None = None  # set once the app's link is published (`evalsvc.owner`)
        self.interrupted: list = []  # jobs still running when the workers were stopped

    @contextlib.contextmanager
    def cursor(self):
        """A DuckDB cursor of this request's own, closed afterwards (taken from `store.db`, so a test can count
        them by wrapping the connection)."""
        cursor = self.store.db.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def user(self, request) -> str:
        """Who sent a Gradio event: the session's name, `local` without logins."""
        return getattr(request, "username", None) or LOCAL_USER if self.gate is None else \
            (self.gate.user(request) or "")

    def account(self, request) -> Account | None:
        """The account of a Gradio event's session (the local admin without logins; None: no session)."""
        if self.gate is None:
            return LOCAL_ACCOUNT
        session = self.gate.session(request)
        return session.account if session else None

    def session_id(self, request) -> str:
        """The id of a Gradio event's session ("" without logins), which vote pairs are bound to."""
        session = self.gate.session(request) if self.gate else None
        return session.id if session else ""

    def require(self, request, right: str) -> None:
        """Refuse an event whose account lacks `right` (`may_act`, `may_vote` or `may_read`) with InputError."""
        account = self.account(request)
        if account is None:
            raise InputError("log in first")
        if not getattr(account, right):
            what = {"may_act": "an admin", "may_vote": "a voter or an admin", "may_read": "a reviewer or an admin"}
            raise InputError(f"only {what[right]} may do this (you are logged in as a {account.role})")

    def runs(self) -> list[str]:
        """The runs the run chooser lists: without `internal_runs`, not those `regress` makes for itself (unless
        one was asked for with `--run`)."""
        from ..regress.run import REGRESS_RUN_PREFIX

        with self.cursor() as db:
            names = [name for name, in db.execute("SELECT name FROM runs ORDER BY name").fetchall()]
        return [n for n in names if self.config.internal_runs or not n.startswith(REGRESS_RUN_PREFIX)
                or n == self.config.run]


def vote_png(path: Path, rng=None) -> bytes:
    """The image's pixels re-encoded as a PNG with no text chunks or other metadata, a random 5% of its channel
    values moved by 1/255 (invisible), so that no two servings of one image are the same file: the bytes of an
    image whose identity a reveal showed cannot be matched to a later pair (by this voter or another)."""
    import secrets

    import numpy as np
    from PIL import Image

    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(64))
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    moved = (rng.random(pixels.shape) < 0.05) * rng.choice(np.array([-1, 1], dtype=np.int16), pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels + moved, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def build_app(state: AppState):
    """The FastAPI application: the session gate (with logins), the image routes and the Gradio UI at `/`."""
    import gradio as gr
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse, Response

    from ..votes import issued_image
    from .files import FileRefused, resolve_image
    from .ui import build_blocks
    from .vote_page import build_vote_blocks

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # no API docs routes
    if state.gate is not None:
        state.gate.install(app)  # innermost: the host and origin checks below run first
    _host_checks(app, state.config.host_names())

    @app.get("/image/{name:path}")
    def image(name: str):
        try:
            path = resolve_image(state.images, name)
        except FileRefused as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        return FileResponse(path, media_type="image/png")

    @app.get("/vote-image/{token}")
    def vote_image(token: str, request: Request):
        session = getattr(request.state, "session", None)
        viewer = (session.user, session.id) if session else (LOCAL_USER, "")
        with state.cursor() as db:
            path = issued_image(db, token, state.images, *viewer)
        if path is None:
            raise HTTPException(status_code=404, detail="no open pair shows this image")
        return Response(vote_png(path), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    _job_routes(app, state)
    auth = {"auth_dependency": state.gate.user} if state.gate else {}
    runs = state.runs()
    vote_run = state.config.run or (runs[0] if runs else "")
    closed = {"openapi_url": None, "docs_url": None, "redoc_url": None}  # no API docs routes in Gradio's apps either
    gr.mount_gradio_app(app, build_vote_blocks(state, vote_run), path="/vote", footer_links=[], **auth,
                        app_kwargs=closed)
    return gr.mount_gradio_app(app, build_blocks(state), path="/", footer_links=[], app_kwargs=closed, **auth)


def _host_checks(app, names: list[str]) -> None:
    """Answer only requests addressed to the app's own names (Starlette's TrustedHostMiddleware: 400 for any
    other Host header), and refuse cross-origin requests (an Origin header naming another host or port: 403).

    A page of a foreign site that resolves its own name to 127.0.0.1 (DNS rebinding) sends its own name as the
    Host, and a page elsewhere that posts to the app sends its own Origin: neither reaches a route."""
    from urllib.parse import urlsplit

    from fastapi.responses import PlainTextResponse
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    @app.middleware("http")
    async def same_origin(request, call_next):
        origin = request.headers.get("origin")
        if origin and origin != "null":
            own = request.headers.get("host", "")
            if urlsplit(origin).netloc.lower() != own.lower():
                return PlainTextResponse("cross-origin requests are refused", status_code=403)
        return await call_next(request)

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=names)


def _job_routes(app, state: AppState) -> None:
    import hmac

    from fastapi import Body, Header, HTTPException

    from ..errors import InputError
    from ..jobs import get_job, submit

    def token_checked(authorization: str | None) -> None:
        given = (authorization or "").removeprefix("Bearer ")
        if state.job_token is None or not hmac.compare_digest(given.encode(), state.job_token.encode()):
            raise HTTPException(status_code=401, detail="a job needs the token in the store folder's app.json")

    @app.post("/jobs")
    def queue_job(payload: dict = Body(...), authorization: str | None = Header(None)):
        token_checked(authorization)
        try:
            with state.cursor() as db:
                job_id = submit(db, str(payload.get("command")), payload.get("args"),
                                str(payload.get("submitted_by") or ""))
        except InputError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        state.workers.wake()
        return {"id": job_id}

    @app.get("/jobs/{job_id}")
    def job(job_id: int, authorization: str | None = Header(None)):
        token_checked(authorization)
        with state.cursor() as db:
            found = get_job(db, job_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return found.to_json()



@contextlib.contextmanager
def running_workers(state: AppState, url: str):
    """Publish the app's link for commands run meanwhile and run the job workers; undone on exit."""
    from ..owner import publish, withdraw

    link = publish(state.store.layout.root, url)
    state.job_token = link.token
    state.workers.start()
    try:
        yield link
    finally:
        state.interrupted = state.workers.stop()
        withdraw(state.store.layout.root, link)


def serve(store_path: Path | None, config: AppConfig, open_browser: bool = False) -> None:
    """Open the store, check where to listen, and run the app and its job workers until interrupted;
    with `open_browser`, open the app in the user's browser once it answers."""
    import uvicorn

    from ..store import open_store
    from .access import check_bind, load_auth_file

    check_bind(config.host, config.auth_file)
    accounts = load_auth_file(config.auth_file) if config.auth_file is not None else None
    with open_store(store_path) as store:
        state = AppState(store, config, accounts)
        app = build_app(state)
        local = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
        url = f"http://{local}:{config.port}/"
        with running_workers(state, url):
            print(f"evalsvc app on http://{config.host}:{config.port}/ (store {store.layout.root}); Ctrl-C stops",
                  flush=True)
            if open_browser:
                threading.Thread(target=_open_when_up, args=(url, local, config.port), daemon=True).start()
            uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
        if state.interrupted:
            # A worker is inside a job (sampling, scoring) that cannot be cut short. Ending the process is what a
            # crash would do, which the store is built for: the job is queued again when the app next starts.
            for job in state.interrupted:
                print(f"job {job.id} ({job.command} {job.run}) was interrupted; the app queues it again when it "
                      "next starts and it goes on from its last finished batch", flush=True)
            os._exit(130)


def _open_when_up(url: str, host: str, port: int, timeout: float = 60.0) -> None:
    import socket
    import time
    import webbrowser

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    if not webbrowser.open(url):
        print(f"no browser to open here: visit {url}", flush=True)
