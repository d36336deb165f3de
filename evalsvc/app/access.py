"""Who may use the app and where it listens: safe by default.

- The app binds to 127.0.0.1 unless told otherwise; any other address (0.0.0.0, a LAN address) is refused
  without an auth file, because votes identify voters by their login.
- The auth file has one `name:password[:role]` per line (`#` comments and blank lines ignored). The role is
  `voter` (the vote page and its images only), `reviewer` (every read-only view) or `admin` (also
  release decisions, jobs and votes); a line without one is a voter. A password may contain colons; a last
  field that names a role is read as the role. Like an SSH key, the file must not be readable by other users
  (mode 600 or stricter), names must be unique, and neither name nor password may be empty. Passwords are
  compared in constant time.
- Without an auth file (on this machine only) the one user is `local`, an admin.
"""

from __future__ import annotations

import hmac
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
ROLES = ("voter", "reviewer", "admin")
LOCAL_USER = "local"


@dataclass(frozen=True)
class Account:
    password: str
    role: str = "voter"

    def __post_init__(self):
        if self.role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")

    @property
    def may_read(self) -> bool:
        """Whether the account sees the main page's read-only views (grid, compare, curves, ...)."""
        return self.role in ("reviewer", "admin")

    @property
    def may_vote(self) -> bool:
        """Voters and admins vote; a reviewer sees every checkpoint's images by name, so could not vote blind."""
        return self.role in ("voter", "admin")

    @property
    def may_act(self) -> bool:
        """Whether the account may change what the store holds besides votes (decisions, jobs)."""
        return self.role == "admin"


LOCAL_ACCOUNT = Account("", "admin")


def check_bind(host: str, auth_file: Path | None) -> None:
    """Refuse to listen beyond this machine without logins."""
    if host not in LOCAL_HOSTS and auth_file is None:
        raise InputError(f"refusing to listen on {host} without --auth FILE: anyone who can reach it could vote "
                         "and read the store's images; use 127.0.0.1 or give an auth file")


def parse_account(line: str) -> tuple[str, Account] | None:
    """(name, account) from one `name:password[:role]` line; None when the line is not of that form."""
    name, sep, rest = line.partition(":")
    password, role = rest, "voter"
    head, colon, last = rest.rpartition(":")
    if colon and last in ROLES:
        password, role = head, last
    if not sep or not name.strip() or not password:
        return None
    return name.strip(), Account(password, role)


def load_auth_file(path: Path) -> dict[str, Account]:
    """{name: account} from `path`, checked as the module says."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"auth file {path} does not exist")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"auth file {path} is readable by other users; run `chmod 600 {path}`")
    accounts: dict[str, Account] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parsed = parse_account(line)
        if parsed is None:
            raise InputError(f"{path}:{number}: expected name:password or name:password:role "
                             f"(roles: {', '.join(ROLES)})")
        name, account = parsed
        if name in accounts:
            raise InputError(f"{path}:{number}: user {name!r} is listed twice")
        accounts[name] = account
    if not accounts:
        raise InputError(f"auth file {path} lists no users")
    return accounts


def password_matches(accounts: dict[str, Account], name: str, password: str) -> bool:
    """Whether `password` is `name`'s, constant-time in the password (an unknown name costs the same)."""
    account = accounts.get(name)
    expected = account.password if account is not None else "\0" * max(1, len(password))
    matched = hmac.compare_digest(expected.encode(), password.encode())
    return account is not None and matched
