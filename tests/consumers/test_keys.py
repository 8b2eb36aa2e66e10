"""The form of keys, their keyed hash and the check of a presented one."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest

from consumers import keys


def test_a_key_has_a_visible_prefix_and_a_long_random_part() -> None:
    key, prefix = keys.new_key()
    assert key.startswith(prefix + "_") and prefix.startswith("gwk_") and len(prefix) == keys.PREFIX_LENGTH
    assert len(key) == keys.PREFIX_LENGTH + 1 + 40
    assert keys.prefix_of(key) == prefix
    assert len({keys.new_key()[0] for _ in range(50)}) == 50


def test_the_stored_form_is_a_keyed_hash_not_the_key_nor_its_plain_hash() -> None:
    key, _ = keys.new_key()
    stored = keys.digest(key)
    assert key not in stored and len(stored) == 64
    assert stored != hashlib.sha256(key.encode()).hexdigest()
    assert keys.matches(key, stored)
    assert not keys.matches(key[:-1] + ("a" if key[-1] != "a" else "b"), stored)


def test_another_pepper_gives_another_hash(settings: Any) -> None:
    key, _ = keys.new_key()
    first = keys.digest(key)
    settings.GATEWAY_KEY_PEPPER = "another-pepper"
    assert keys.digest(key) != first
    assert not keys.matches(key, first)


@pytest.mark.parametrize("text", ["", "Bearer", "sk-openai-key", "gwk_1234567_" + "a" * 40, "gwk_12345678_short",
                                  "gwx_12345678_" + "a" * 40])
def test_anything_not_shaped_like_a_key_has_no_prefix(text: str) -> None:
    assert keys.prefix_of(text) is None


@pytest.mark.parametrize(("text", "expected"), [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)),
                                                ("90m", timedelta(minutes=90)), ("2w", timedelta(weeks=2)),
                                                (" 45s ", timedelta(seconds=45))])
def test_durations(text: str, expected: timedelta) -> None:
    assert keys.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "-1d", "30 days", "1y"])
def test_other_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        keys.parse_duration(text)


def test_a_key_checked_once_is_remembered_but_a_lookalike_with_its_prefix_is_still_refused() -> None:
    from providers.errors import Unauthorized
    from serving import auth

    key, prefix = keys.new_key()
    consumer = auth.LiveConsumer("team", True, True, frozenset(), None, None)
    table = {prefix: auth.LiveKey(prefix, keys.digest(key), "team", None, False)}
    consumers = {"team": consumer}
    assert auth.authenticate(f"Bearer {key}", table, consumers).key_prefix == prefix
    assert auth._checked[keys.digest(key)] == key.encode()  # the second call compares instead of hashing
    assert auth.authenticate(f"Bearer {key}", table, consumers).consumer is consumer
    lookalike = key[:-1] + ("a" if key[-1] != "a" else "b")
    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {lookalike}", table, consumers)
    revoked = {prefix: auth.LiveKey(prefix, keys.digest(key), "team", None, True)}
    with pytest.raises(Unauthorized, match="revoked"):
        auth.authenticate(f"Bearer {key}", revoked, consumers)
