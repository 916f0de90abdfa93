"""Password hashing for SMDP user authentication (argon2id).

Users log in to their SMDP server with {username, password} (paper, Table 5:
``user`` then ``pwd_``), so the server stores one password hash per account.  Argon2id is
used because it is memory-hard (resists GPU/ASIC guessing of a stolen table)
and is the variant RFC 9106 and OWASP recommend.

Design notes:

* ``verify`` returns a bool and never raises for a wrong password or a
  malformed stored hash: a corrupt row must read as "login failed", not as an
  exception that a protocol handler might turn into a different reply (an
  oracle telling an attacker which accounts have broken hashes).
* ``verify_absent`` lets a login for an unknown account spend the same time
  as a wrong password for a real one, so response time does not reveal which
  user names exist.
* Hashing costs tens of milliseconds of CPU and 64 MiB of RAM.  The ``*_async``
  methods move that work off the event loop, onto a small pool whose size caps
  how many hashes (and therefore how much memory) can run at once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "DEFAULT_MEMORY_COST",
    "DEFAULT_PARALLELISM",
    "DEFAULT_TIME_COST",
    "DUMMY_HASH",
    "Passwords",
    "get_default",
    "hash_password",
    "needs_rehash",
    "set_default",
    "verify_absent",
    "verify_password",
]

# RFC 9106 §4 "second recommended option" (also argon2-cffi's defaults):
# 64 MiB, 3 passes, 4 lanes.
DEFAULT_TIME_COST = 3
DEFAULT_MEMORY_COST = 64 * 1024  # KiB
DEFAULT_PARALLELISM = 4

# Hash of a random password that was thrown away, computed once with the
# default parameters above.  Nothing can match it; it exists only so that
# verify_absent() does exactly the work of a real verification without paying
# a 64 MiB hash at import time.  Instances with other parameters derive their
# own dummy (see Passwords._dummy_hash) because the cost of a verification is
# set by the parameters embedded in the stored hash.
DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$BDOStNSmWMRn0W3Zgt+Ryg"
    "$KmqHMbPkxQXtGy+hePQNMwB5WEJHHxBewBWsHwlwgho"
)


def _normalize(password: str) -> str:
    # The same password typed on different systems can arrive in different
    # Unicode forms (e.g. macOS input yields decomposed accents); NIST SP
    # 800-63B asks for NFKC/NFKD so those still match.  ASCII is unaffected.
    return unicodedata.normalize("NFKC", password)


class Passwords:
    """An argon2id hasher with fixed cost parameters.

    Production code uses the defaults; tests pass cheap parameters (for
    example ``Passwords(time_cost=1, memory_cost=8, parallelism=1)``).
    """

    def __init__(
        self,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST,
        parallelism: int = DEFAULT_PARALLELISM,
        *,
        max_concurrent: int | None = None,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )
        # Each running hash holds memory_cost KiB; bounding concurrency bounds
        # peak memory under a burst of logins.
        self._max_concurrent = max_concurrent or max(1, os.cpu_count() or 1)
        self._executor: ThreadPoolExecutor | None = None
        self._dummy: str | None = None
        self._lock = threading.Lock()

    @property
    def time_cost(self) -> int:
        return self._hasher.time_cost

    @property
    def memory_cost(self) -> int:
        return self._hasher.memory_cost

    @property
    def parallelism(self) -> int:
        return self._hasher.parallelism

    def hash(self, password: str) -> str:
        """Return an encoded argon2id hash (PHC string, salt included)."""
        return self._hasher.hash(_normalize(password))

    def verify(self, stored: str, password: str) -> bool:
        """True iff ``password`` matches ``stored``.

        False, never an exception, for a wrong password or a stored value
        that is not a valid argon2 hash.
        """
        try:
            return self._hasher.verify(stored, _normalize(password))
        except (VerificationError, InvalidHashError):
            # VerifyMismatchError is a VerificationError subclass; the base
            # class also covers decodable-but-broken hashes (bad lengths).
            return False
        except (ValueError, TypeError):
            # Defensive: odd encodings of ``stored`` must not escape as an
            # error either (see module docstring).
            return False

    def needs_rehash(self, stored: str) -> bool:
        """True if ``stored`` was not made with this instance's parameters.

        Call after a successful ``verify`` and store ``hash(password)`` when
        True, so cost upgrades roll out as users log in.  A malformed stored
        value also answers True: it is certainly not what we would produce.
        """
        try:
            return self._hasher.check_needs_rehash(stored)
        except (InvalidHashError, ValueError):
            return True

    def verify_absent(self, password: str) -> bool:
        """Burn the time of a failed verification; always returns False.

        Call this when the account does not exist, so that an unknown user
        and a wrong password are indistinguishable by timing.
        """
        self.verify(self._dummy_hash(), password)
        return False

    @property
    def dummy_hash(self) -> str:
        """The hash ``verify_absent`` checks against (same parameters as ours)."""
        return self._dummy_hash()

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            with self._lock:
                if self._dummy is None:
                    self._dummy = self._make_dummy()
        return self._dummy

    def _make_dummy(self) -> str:
        params = extract_parameters(DUMMY_HASH)
        if (
            params.time_cost == self.time_cost
            and params.memory_cost == self.memory_cost
            and params.parallelism == self.parallelism
            and params.hash_len == self._hasher.hash_len
            and params.salt_len == self._hasher.salt_len
        ):
            return DUMMY_HASH
        return self._hasher.hash(secrets.token_urlsafe(32))

    # -- async wrappers -----------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        max_workers=self._max_concurrent,
                        thread_name_prefix="smdp-argon2",
                    )
        return self._executor

    async def hash_async(self, password: str) -> str:
        """``hash`` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self.hash, password)

    async def verify_async(self, stored: str, password: str) -> bool:
        """``verify`` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self.verify, stored, password)

    async def verify_absent_async(self, password: str) -> bool:
        """``verify_absent`` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self.verify_absent, password)

    def close(self) -> None:
        """Release the worker threads of the async wrappers (idempotent)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


_default: Passwords | None = None
_default_lock = threading.Lock()


def get_default() -> Passwords:
    """The process-wide instance used by the module-level functions."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Passwords()
    return _default


def set_default(passwords: Passwords) -> None:
    """Replace the process-wide instance (configuration, or cheap test params)."""
    global _default
    with _default_lock:
        _default = passwords


def hash_password(password: str) -> str:
    """argon2id hash of ``password`` with the default instance's parameters."""
    return get_default().hash(password)


def verify_password(stored: str, password: str) -> bool:
    """``Passwords.verify`` on the default instance."""
    return get_default().verify(stored, password)


def needs_rehash(stored: str) -> bool:
    """``Passwords.needs_rehash`` on the default instance."""
    return get_default().needs_rehash(stored)


def verify_absent(password: str) -> bool:
    """``Passwords.verify_absent`` on the default instance; always False."""
    return get_default().verify_absent(password)
