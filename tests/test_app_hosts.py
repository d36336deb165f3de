"""The app answers only its own host names and same-origin requests, in local and in auth mode (DNS rebinding)."""

import urllib.error
import urllib.request

import pytest

from conftest import APP_USERS, serve_app


def _status(url: str, headers: dict[str, str], method: str = "GET", data: bytes | None = None) -> int:
    request = urllib.request.Request(url, headers=headers, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def image_name(store):
    """A store with one image on disk and in `samples`, so `/image/...` has something to give."""
    from evalsvc.sampling.imagestore import ImageStore

    rel, _ = ImageStore(store.layout.images, store.layout.tmp).put(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return rel


@pytest.mark.parametrize("users", [None, APP_USERS], ids=["local", "auth"])
def test_a_foreign_host_gets_no_page_no_image_and_no_action(store, image_name, users):
    from evalsvc.app.server import AppConfig

    with serve_app(store, users, config=AppConfig(allowed_hosts=("evalsvc.lab",))) as url:
        port = url.rstrip("/").rsplit(":", 1)[1]
        own = {"Host": f"127.0.0.1:{port}"}
        assert _status(url + "gradio_api/info", own) in (200, 401)  # answered (auth mode asks for a login)
        assert _status(url + "gradio_api/info", {"Host": f"evalsvc.lab:{port}"}) in (200, 401)  # --allowed-host
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.2:{port}"):
            foreign = {"Host": host}
            assert _status(url, foreign) == 400
            assert _status(url + f"image/{image_name}", foreign) == 400
            assert _status(url + "vote/", foreign) == 400
            assert _status(url + "gradio_api/info", foreign) == 400
            assert _status(url + "jobs", {**foreign, "Content-Type": "application/json"}, "POST", b"{}") == 400
            assert _status(url + "login", {**foreign, "Content-Type": "application/x-www-form-urlencoded"}, "POST",
                           b"username=ann&password=pw-ann") == 400


def test_cross_origin_requests_and_the_api_docs_are_refused(store):
    with serve_app(store) as url:
        port = url.rstrip("/").rsplit(":", 1)[1]
        own = {"Host": f"127.0.0.1:{port}"}
        for path in ("docs", "redoc", "openapi.json", "vote/docs", "vote/openapi.json"):
            assert _status(url + path, own) == 404
        posted = {**own, "Content-Type": "application/json"}
        assert _status(url + "jobs", {**posted, "Origin": "http://attacker.example"}, "POST", b"{}") == 403
        assert _status(url + "jobs", {**posted, "Origin": f"http://127.0.0.1:{int(port) + 1}"}, "POST", b"{}") == 403
        # the app's own pages post with their own origin: answered (401: no job token)
        assert _status(url + "jobs", {**posted, "Origin": f"http://127.0.0.1:{port}"}, "POST", b"{}") == 401
