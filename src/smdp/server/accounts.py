"""Accounts (assumptions 1 and 2): creating users, identities and logging in."""

from __future__ import annotations

from smdp.config import Config
from smdp.core.passwords import Passwords
from smdp.mail.addresses import AddressError, parse_address
from smdp.protocol.user import password_problem
from smdp.store import Store, StoreError
from smdp.store.records import User


class AccountError(Exception):
    """An administrative request is invalid; the message says why."""


def check_password(password: str) -> None:
    """Refuse a password no one could log in with (protocol.md 12.3): the
    user port's grammar is the one rule of which passwords exist."""
    problem = password_problem(password)
    if problem is not None:
        raise AccountError(f"{problem}: no one could log in with it; choose another")


def passwords_for(config: Config) -> Passwords:
    return Passwords(
        time_cost=config.password_time_cost,
        memory_cost=config.password_memory_kib,
        parallelism=1,
    )


class Accounts:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.passwords = passwords_for(config)

    def _local_address(self, text: str) -> str:
        try:
            address = parse_address(text)
        except AddressError as exc:
            raise AccountError(str(exc)) from None
        if not self.config.is_local(address.domain):
            raise AccountError(
                f"{address} is not in a domain this server serves "
                f"({', '.join(self.config.domains)})"
            )
        return str(address).lower()

    def create(self, address: str, password: str) -> User:
        check_password(password)
        main = self._local_address(address)
        try:
            return self.store.create_user(main, self.passwords.hash(password))
        except StoreError as exc:
            raise AccountError(str(exc)) from None

    def user(self, address: str) -> User:
        user = self.store.user_by_address(self._local_address(address))
        if user is None:
            raise AccountError(f"no user has the address {address}")
        return user

    def add_identity(self, user_address: str, identity: str) -> None:
        user = self.user(user_address)
        try:
            self.store.add_identity(user.id, self._local_address(identity))
        except StoreError as exc:
            raise AccountError(str(exc)) from None

    def remove_identity(self, user_address: str, identity: str) -> None:
        user = self.user(user_address)
        try:
            self.store.remove_identity(user.id, self._local_address(identity))
        except StoreError as exc:
            raise AccountError(str(exc)) from None

    def set_password(self, address: str, password: str) -> None:
        check_password(password)
        user = self.user(address)
        # A new password is the answer to a leaked one: the web API tokens
        # made under the old one die with it (docs/api.md, "Tokens").
        with self.store.transaction():
            self.store.set_password(user.id, self.passwords.hash(password))
            self.store.drop_api_tokens(user.id)

    async def verify(self, user: User, password: str) -> bool:
        """Whether ``password`` is ``user``'s password now (read afresh: another
        session may have changed it since this one logged in)."""
        current = self.store.user_by_id(user.id)
        stored = current.password_hash if current is not None else self.passwords.dummy_hash
        return await self.passwords.verify_async(stored, password)

    async def change_password(self, user: User, password: str) -> None:
        """The user's own change (user port NEWPASS); hashed off the event loop."""
        check_password(password)
        digest = await self.passwords.hash_async(password)
        with self.store.transaction():
            self.store.set_password(user.id, digest)
            self.store.drop_api_tokens(user.id)

    async def authenticate(self, name: str, password: str) -> User | None:
        """Assumption 2: any identity (main or secondary) logs the user in.

        An unknown name costs as much Argon2 work as a wrong password, so the
        reply time does not tell whether an account exists. The hashing runs
        in a thread pool, off the event loop.
        """
        try:
            address = str(parse_address(name)).lower()
        except AddressError:
            await self.passwords.verify_absent_async(password)
            return None
        user = self.store.user_by_address(address)
        if user is None:
            await self.passwords.verify_absent_async(password)
            return None
        if not await self.passwords.verify_async(user.password_hash, password):
            return None
        return user
