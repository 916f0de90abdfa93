"""The DKIM signing keys of ``[dkim]``, loaded once per key file version.

Loading a private key is the dear part of signing: ``cryptography`` checks
an RSA key's consistency as it loads it, some 45 ms of CPU for 2048 bits,
where signing a 4 KB message with it takes under 1 (docs/benchmarks.md,
section 8.2). So a key is loaded once and kept while its file is unchanged.
The file is looked at (``stat``) for every message, and a new modification
time, size or inode loads it again: a rotated key (docs/smtp.md, "Rotating a
key") signs the next message, with no restart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from smdp.config import DkimSetting
from smdp.mail.dkim import SigningKey

__all__ = ["SigningKeys"]


@dataclass(frozen=True, slots=True)
class _Version:
    """What tells one content of a key file from the next."""

    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _Version:
        st = os.stat(path)
        return cls(st.st_mtime_ns, st.st_size, st.st_ino)


class SigningKeys:
    """``key(domain, setting)``: the domain's key, from the cache while its
    file is the one it was loaded from. Raises OSError (the file cannot be
    read) and DkimError (it holds no usable key), as loading does."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, str, Path], tuple[_Version, SigningKey]] = {}
        self.loads = 0  # how many times a key file was read and parsed

    def key(self, domain: str, setting: DkimSetting) -> SigningKey:
        cache_key = (domain, setting.selector, setting.algorithm, setting.key)
        version = _Version.of(setting.key)
        found = self._keys.get(cache_key)
        if found is not None and found[0] == version:
            return found[1]
        pem = setting.key.read_bytes()
        key = SigningKey.from_setting(domain, setting, pem)
        self.loads += 1
        # The version seen before the read: a file replaced while it was read
        # is loaded again next time rather than kept under the new version.
        self._keys[cache_key] = (version, key)
        return key
