"""`manage.py ensure_admin`: the first run makes an operator with a random password, printed once;
there is never a shared default password."""
from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db

PASSWORD_LINE = re.compile(r"^Admin: (\S+)  user: (\S+)  password: (\S+)$", re.MULTILINE)


def ensure_admin(*args: str) -> str:
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


def test_the_first_run_creates_a_superuser_and_prints_its_password_once() -> None:
    out = ensure_admin()
    match = PASSWORD_LINE.search(out)
    assert match is not None, out
    url, username, password = match.groups()
    assert (url, username) == ("http://127.0.0.1:5000/admin/", "admin")
    user = authenticate(username="admin", password=password)
    assert user is not None and user.is_superuser and user.is_staff
    assert "This password is shown once" in out


def test_each_installation_gets_a_different_strong_password() -> None:
    first = PASSWORD_LINE.search(ensure_admin())
    get_user_model().objects.all().delete()
    second = PASSWORD_LINE.search(ensure_admin())
    assert first is not None and second is not None
    assert first.group(3) != second.group(3)
    assert min(len(first.group(3)), len(second.group(3))) >= 16


def test_a_second_run_prints_no_password_and_changes_nothing() -> None:
    password = PASSWORD_LINE.search(ensure_admin())
    assert password is not None
    out = ensure_admin()
    assert PASSWORD_LINE.search(out) is None
    assert "password:" not in out
    assert out.startswith("Admin: http://127.0.0.1:5000/admin/ (log in with your operator account")
    assert get_user_model().objects.count() == 1
    assert authenticate(username="admin", password=password.group(3)) is not None


def test_an_existing_operator_means_no_new_account() -> None:
    get_user_model().objects.create_superuser("ops", password="their-own-password")
    ensure_admin()
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["ops"]


def test_the_username_and_url_can_be_chosen() -> None:
    out = ensure_admin("--username", "operator", "--url", "https://gw.example/admin/")
    match = PASSWORD_LINE.search(out)
    assert match is not None and match.groups()[:2] == ("https://gw.example/admin/", "operator")
    assert get_user_model().objects.get().username == "operator"


def test_a_plain_user_holding_the_name_is_reported_not_crashed_on() -> None:
    get_user_model().objects.create_user("admin", password="not-an-operator")
    with pytest.raises(CommandError, match=r"^A user named 'admin' exists but is not a superuser: pass --username"):
        ensure_admin()
    assert not get_user_model().objects.filter(is_superuser=True).exists()
