"""argon2id password hashing (cheap parameters: these tests check behaviour, not cost)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

import pytest
from argon2 import extract_parameters
from hypothesis import given, settings
from hypothesis import strategies as st

from smdp.core import passwords as pw
from smdp.core.passwords import DUMMY_HASH, Passwords

CHEAP = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}


@pytest.fixture
def cheap() -> Iterator[Passwords]:
    p = Passwords(**CHEAP)
    yield p
    p.close()


@pytest.fixture
def cheap_default(cheap: Passwords) -> Iterator[Passwords]:
    previous = pw.get_default()
    pw.set_default(cheap)
    yield cheap
    pw.set_default(previous)


def test_hash_is_argon2id_with_our_parameters(cheap: Passwords) -> None:
    stored = cheap.hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    params = extract_parameters(stored)
    assert (params.time_cost, params.memory_cost, params.parallelism) == (1, 8, 1)
    # A fresh salt each time.
    assert cheap.hash("correct horse") != stored


def test_verify(cheap: Passwords) -> None:
    stored = cheap.hash("correct horse")
    assert cheap.verify(stored, "correct horse") is True
    assert cheap.verify(stored, "Correct horse") is False
    assert cheap.verify(stored, "") is False
    assert cheap.verify(cheap.hash(""), "") is True


def test_verify_accepts_hashes_made_with_other_parameters(cheap: Passwords) -> None:
    # After a cost change, existing hashes must still log users in.
    old = Passwords(time_cost=2, memory_cost=16, parallelism=2)
    stored = old.hash("s3cret")
    assert cheap.verify(stored, "s3cret")
    assert cheap.needs_rehash(stored)
    assert not old.needs_rehash(stored)


def test_unicode_forms_are_equivalent(cheap: Passwords) -> None:
    composed = unicodedata.normalize("NFC", "pässwörd")
    decomposed = unicodedata.normalize("NFD", "pässwörd")
    assert composed != decomposed
    assert cheap.verify(cheap.hash(composed), decomposed)
    assert cheap.verify(cheap.hash(decomposed), composed)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=65536,t=3,p=4$AAAA$BBBB",  # decodes, but too short
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$!!!not-base64!!!",
        "$2b$12$abcdefghijklmnopqrstuu7ZVmA0v3pUvc0Vb6oH6s9m8Q8yFm3W6",  # bcrypt
        "$argon2id$v=19$m=999999999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "\x00\udcff",
    ],
)
def test_verify_never_raises_for_malformed_stored_hash(cheap: Passwords, stored: str) -> None:
    assert cheap.verify(stored, "anything") is False
    assert cheap.needs_rehash(stored) is True


@settings(max_examples=200, deadline=None)
@given(stored=st.text(), password=st.text())
def test_verify_never_raises_property(stored: str, password: str) -> None:
    p = Passwords(**CHEAP)
    assert p.verify(stored, password) is False
    assert p.verify("$argon2id$v=19$m=8,t=1,p=1$" + stored, password) is False


def test_needs_rehash(cheap: Passwords) -> None:
    assert cheap.needs_rehash(cheap.hash("x")) is False
    assert Passwords(time_cost=2, memory_cost=8, parallelism=1).needs_rehash(cheap.hash("x"))


def test_verify_absent_uses_a_hash_with_our_cost(cheap: Passwords) -> None:
    assert cheap.verify_absent("whatever") is False
    params = extract_parameters(cheap.dummy_hash)
    assert (params.time_cost, params.memory_cost, params.parallelism) == (1, 8, 1)
    assert cheap.dummy_hash is cheap.dummy_hash  # computed once


def test_default_parameters_use_the_precomputed_dummy() -> None:
    params = extract_parameters(DUMMY_HASH)
    assert (params.time_cost, params.memory_cost, params.parallelism) == (
        pw.DEFAULT_TIME_COST,
        pw.DEFAULT_MEMORY_COST,
        pw.DEFAULT_PARALLELISM,
    )
    assert pw.DEFAULT_MEMORY_COST == 64 * 1024
    # Only the (cheap) comparison of parameters runs here, no 64 MiB hash.
    assert Passwords().dummy_hash == DUMMY_HASH


def test_verify_absent_goes_through_a_real_verification(
    cheap: Passwords, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []
    real_verify = cheap.verify

    def spy(stored: str, password: str) -> bool:
        seen.append((stored, password))
        return real_verify(stored, password)

    monkeypatch.setattr(cheap, "verify", spy)
    assert cheap.verify_absent("hunter2") is False
    assert seen == [(cheap.dummy_hash, "hunter2")]


def test_unknown_user_costs_the_same_work_as_a_wrong_password() -> None:
    # No timing assertion (timings belong in benchmarks): the dummy hash that
    # verify_absent checks has exactly the instance's Argon2 parameters, so an
    # unknown account does the same work as a wrong password.
    p = Passwords(time_cost=2, memory_cost=64, parallelism=1)
    real = extract_parameters(p.hash("right"))
    dummy = extract_parameters(p.dummy_hash)
    assert (dummy.time_cost, dummy.memory_cost, dummy.parallelism) == (
        real.time_cost, real.memory_cost, real.parallelism)


def test_module_level_functions(cheap_default: Passwords) -> None:
    stored = pw.hash_password("pw")
    assert extract_parameters(stored).memory_cost == 8
    assert pw.verify_password(stored, "pw")
    assert not pw.verify_password(stored, "nope")
    assert not pw.verify_password("garbage", "pw")
    assert not pw.needs_rehash(stored)
    assert pw.verify_absent("pw") is False
    assert pw.get_default() is cheap_default


async def test_async_variants(cheap: Passwords) -> None:
    stored = await cheap.hash_async("pw")
    assert await cheap.verify_async(stored, "pw")
    assert not await cheap.verify_async(stored, "wrong")
    assert not await cheap.verify_async("garbage", "pw")
    assert await cheap.verify_absent_async("pw") is False
    cheap.close()
    cheap.close()
    # Usable again after close: the pool is recreated on demand.
    assert await cheap.verify_async(stored, "pw")
