"""Reaching the app that owns a store, so commands run while it is up can queue their work there.

The app writes `app.json` into the store folder (mode 600): its PID, a local URL and a random token. A
command that finds the store locked reads it; when the PID is the lock's holder and alive, it posts its work
to the app's `/jobs` route with the token. Being able to read the store folder is the permission to queue:
the voters' logins play no part. Plain `urllib`, so the command line needs no web client library.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import EvalsvcError, StoreInUseError

LINK_FILE = "app.json"


@dataclass(frozen=True)
class AppLink:
    pid: int
    url: str  # ends with '/'
    token: str


def publish(root: Path, url: str) -> AppLink:
    """Write the link for this process's app (readable by the owner only)."""
    link = AppLink(os.getpid(), url if url.endswith("/") else url + "/", secrets.token_urlsafe(32))
    path = Path(root) / LINK_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(link.__dict__, f)
    os.chmod(path, 0o600)
    return link


def withdraw(root: Path, link: AppLink) -> None:
    """Remove the link when it is still this app's."""
    path = Path(root) / LINK_FILE
    if find_link(root, check_lock=False) == link:
        path.unlink(missing_ok=True)


def find_link(root: Path, check_lock: bool = True) -> AppLink | None:
    """The app owning the store at `root`, or None when the holder is not a live app."""
    root = Path(root)
    try:
        link = AppLink(**json.loads((root / LINK_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if check_lock:
        holder = (root / "lock").read_text().strip() if (root / "lock").exists() else ""
        if holder != str(link.pid):
            return None
    try:
        os.kill(link.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return link


def _request(link: AppLink, path: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(link.url + path, data=data, method="POST" if data else "GET",
                                     headers={"Authorization": f"Bearer {link.token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("detail", detail)
        except ValueError:
            pass
        raise EvalsvcError(f"the app at {link.url} refused the job: {detail}") from None
    except OSError as exc:
        raise StoreInUseError(f"the store is in use by the evalsvc app (PID {link.pid}) at {link.url}, which did "
                              f"not answer ({exc}); stop it or wait") from None


def submit_job(link: AppLink, command: str, args: dict, submitted_by: str) -> int:
    """Queue `command` in the app; returns the job id."""
    return int(_request(link, "jobs", {"command": command, "args": args, "submitted_by": submitted_by})["id"])


def job_state(link: AppLink, job_id: int) -> dict:
    return _request(link, f"jobs/{job_id}")
