"""The app listens locally unless given logins; the auth file is checked like an SSH key."""

import pytest

from evalsvc.app.access import Account, check_bind, load_auth_file, password_matches
from evalsvc.errors import InputError


def _auth(tmp_path, text, mode=0o600):
    path = tmp_path / "users.txt"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_listening_beyond_localhost_needs_an_auth_file(tmp_path):
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        with pytest.raises(InputError, match="without --auth"):
            check_bind(host, None)
    check_bind("0.0.0.0", _auth(tmp_path, "ann:pw\n"))


def test_auth_file_is_read_and_checked(tmp_path):
    users = load_auth_file(_auth(tmp_path, "# voters\nann:s3cret:with:colons\n\nbob:pw\nrita:pw:r:reviewer\n"
                                           "ada:pw:admin\neve:pw:voter\n"))
    assert users == {"ann": Account("s3cret:with:colons"), "bob": Account("pw"), "rita": Account("pw:r", "reviewer"),
                     "ada": Account("pw", "admin"), "eve": Account("pw", "voter")}  # a line without a role: a voter
    assert password_matches(users, "ann", "s3cret:with:colons") and not password_matches(users, "ann", "pw")
    assert not password_matches(users, "eve", "pw:voter") and not password_matches(users, "zed", "pw")
    assert [users[n].may_read for n in ("ann", "rita", "ada")] == [False, True, True]
    assert [users[n].may_vote for n in ("ann", "rita", "ada")] == [True, False, True]
    assert [users[n].may_act for n in ("ann", "rita", "ada")] == [False, False, True]


@pytest.mark.parametrize("text,mode,message", [
    ("ann:pw\n", 0o644, "readable by other users"), ("ann\n", 0o600, "expected name:password"),
    ("ann:\n", 0o600, "expected name:password"), ("ann::admin\n", 0o600, "expected name:password"),
    ("ann:a\nann:b\n", 0o600, "listed twice"),
    ("# nobody\n", 0o600, "lists no users"),
])
def test_bad_auth_files_are_refused(tmp_path, text, mode, message):
    with pytest.raises(InputError, match=message):
        load_auth_file(_auth(tmp_path, text, mode))
    with pytest.raises(InputError, match="does not exist"):
        load_auth_file(tmp_path / "missing.txt")


def test_the_run_chooser_hides_the_runs_regress_makes_for_itself_unless_asked(store):
    from evalsvc.app.server import AppConfig, AppState

    store.db.execute("INSERT INTO runs (name) VALUES ('purple'), ('regress-aaaaaaaaaaaa-bbbbbbbbbbbb'), ('zebra')")
    assert AppState(store, AppConfig()).runs() == ["purple", "zebra"]
    assert AppState(store, AppConfig(internal_runs=True)).runs() == ["purple", "regress-aaaaaaaaaaaa-bbbbbbbbbbbb",
                                                                     "zebra"]
    asked = AppConfig(run="regress-aaaaaaaaaaaa-bbbbbbbbbbbb")  # `--run` names one: it is listed
    assert AppState(store, asked).runs() == ["purple", "regress-aaaaaaaaaaaa-bbbbbbbbbbbb", "zebra"]
