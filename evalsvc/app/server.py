"""The app's process: it owns the store, serves images through two checked routes and mounts the Gradio UI.

Routes besides Gradio's:
- `/image/{name}`: a store image by its content address (`files.resolve_image` decides), for the grid;
- `/vote-image/{token}`: the image behind an open vote pair's opaque image id, re-encoded as a PNG without
  any metadata (no infotext, no file name), so nothing in its bytes or URL names the checkpoint.

With logins, both routes need the same session as the UI (Gradio's login cookie); without a session they
answer 401. Every request handler works on its own DuckDB cursor of the one connection (`AppState.cursor`).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request  # at module level: FastAPI resolves the route's annotations here

from ..votes import VoteConfig


@dataclass(frozen=True)
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    auth_file: Path | None = None
    run: str | None = None  # the run shown first and voted on (default: the first run)
    rows_per_page: int = 6
    vote: VoteConfig = field(default_factory=VoteConfig)


class AppState:
    """The open store and what every handler needs from it."""

    def __init__(self, store, config: AppConfig):
        self.store, self.config = store, config
        self.images = store.layout.images

    @contextlib.contextmanager
    def cursor(self):
        cursor = self.store.db.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def runs(self) -> list[str]:
        with self.cursor() as db:
            return [name for name, in db.execute("SELECT name FROM runs ORDER BY name").fetchall()]


def png_without_metadata(path: Path) -> bytes:
    """The image's pixels re-encoded as a PNG with no text chunks or other metadata."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = image.convert("RGB")
    out = io.BytesIO()
    pixels.save(out, format="PNG")
    return out.getvalue()


def build_app(state: AppState, users: dict[str, str] | None = None):
    """The FastAPI application: the two image routes and the Gradio UI at `/`."""
    import gradio as gr
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse, Response

    from ..votes import issued_image
    from .access import password_checker
    from .files import FileRefused, resolve_image
    from .ui import build_blocks, build_vote_blocks

    app = FastAPI()

    def logged_in(request: Request) -> None:
        if users and _session_user(app, request) is None:
            raise HTTPException(status_code=401, detail="log in first")

    @app.get("/image/{name:path}", dependencies=[Depends(logged_in)])
    def image(name: str):
        try:
            path = resolve_image(state.images, name)
        except FileRefused as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        return FileResponse(path, media_type="image/png")

    @app.get("/vote-image/{token}", dependencies=[Depends(logged_in)])
    def vote_image(token: str):
        with state.cursor() as db:
            path = issued_image(db, token, state.images)
        if path is None:
            raise HTTPException(status_code=404, detail="no open pair shows this image")
        return Response(png_without_metadata(path), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    auth = password_checker(users) if users else None
    runs = state.runs()
    vote_run = state.config.run or (runs[0] if runs else "")
    gr.mount_gradio_app(app, build_vote_blocks(state, vote_run), path="/vote", auth=auth, footer_links=[])
    return gr.mount_gradio_app(app, build_blocks(state), path="/", auth=auth, footer_links=[])


def _session_user(app, request) -> str | None:
    """The user of the request's Gradio login cookie on any of the mounted pages (each keeps its own sessions)."""
    for route in app.routes:
        gradio_app = getattr(route, "app", None)
        if hasattr(gradio_app, "tokens") and hasattr(gradio_app, "cookie_id"):
            token = (request.cookies.get(f"access-token-{gradio_app.cookie_id}")
                     or request.cookies.get(f"access-token-unsecure-{gradio_app.cookie_id}"))
            if token in gradio_app.tokens:
                return gradio_app.tokens[token]
    return None


def serve(store_path: Path | None, config: AppConfig) -> None:
    """Open the store, check where to listen, and run the app until interrupted."""
    import uvicorn

    from ..store import open_store
    from .access import check_bind, load_auth_file

    check_bind(config.host, config.auth_file)
    users = load_auth_file(config.auth_file) if config.auth_file is not None else None
    with open_store(store_path) as store:
        app = build_app(AppState(store, config), users)
        print(f"evalsvc app on http://{config.host}:{config.port}/ (store {store.layout.root}); Ctrl-C stops",
              flush=True)
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
