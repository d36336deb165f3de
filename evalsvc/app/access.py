"""Who may use the app and where it listens: safe by default.

- The app binds to 127.0.0.1 unless told otherwise; any other address (0.0.0.0, a LAN address) is refused
  without an auth file, because votes identify voters by their login.
- The auth file has one `name:password` per line (`#` comments and blank lines ignored). Like an SSH key, it
  must not be readable by other users (mode 600 or stricter), names must be unique, and neither part may be
  empty. Passwords are compared in constant time.
"""

from __future__ import annotations

import hmac
import stat
from pathlib import Path

from ..errors import InputError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_bind(host: str, auth_file: Path | None) -> None:
    """Refuse to listen beyond this machine without logins."""
    if host not in LOCAL_HOSTS and auth_file is None:
        raise InputError(f"refusing to listen on {host} without --auth FILE: anyone who can reach it could vote "
                         "and read the store's images; use 127.0.0.1 or give an auth file")


def load_auth_file(path: Path) -> dict[str, str]:
    """{name: password} from `path`, checked as the module says."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"auth file {path} does not exist")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"auth file {path} is readable by other users; run `chmod 600 {path}`")
    users: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        if not sep or not name.strip() or not password:
            raise InputError(f"{path}:{number}: expected name:password")
        if name.strip() in users:
            raise InputError(f"{path}:{number}: user {name.strip()!r} is listed twice")
        users[name.strip()] = password
    if not users:
        raise InputError(f"auth file {path} lists no users")
    return users


def password_checker(users: dict[str, str]):
    """A (name, password) -> bool callable for Gradio's `auth`, constant-time in the password."""
    def check(name: str, password: str) -> bool:
        expected = users.get(name)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    return check
