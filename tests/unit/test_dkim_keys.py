"""The DKIM key cache of outbound SMTP (server/dkim_keys.py): a key file is
parsed once, and parsed again when it changes (a rotated key signs the next
message without a restart)."""

from __future__ import annotations

import os
from pathlib import Path

from smdp.config import DkimSetting
from smdp.mail.dkim import SigningKey, generate_key
from smdp.server.dkim_keys import SigningKeys


def record(pem: bytes) -> str:
    return SigningKey.from_pem("a.example", "s1", "ed25519", pem).public_record()


def test_a_key_file_is_parsed_once_while_it_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "a.example.pem"
    path.write_bytes(generate_key("ed25519"))
    keys = SigningKeys()
    setting = DkimSetting("s1", path, "ed25519")
    first = keys.key("a.example", setting)
    assert keys.key("a.example", setting) is first
    assert keys.loads == 1


def test_a_rotated_key_file_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "a.example.pem"
    old, new = generate_key("ed25519"), generate_key("ed25519")
    assert len(old) == len(new)  # same size, same inode: only the time tells
    path.write_bytes(old)
    keys = SigningKeys()
    setting = DkimSetting("s1", path, "ed25519")
    assert keys.key("a.example", setting).public_record() == record(old)

    before = path.stat()
    path.write_bytes(new)  # in place: the inode stays
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_ino == before.st_ino
    assert keys.key("a.example", setting).public_record() == record(new)
    assert keys.loads == 2


def test_a_key_file_replaced_by_another_file_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "a.example.pem"
    old, new = generate_key("ed25519"), generate_key("ed25519")
    path.write_bytes(old)
    keys = SigningKeys()
    setting = DkimSetting("s1", path, "ed25519")
    keys.key("a.example", setting)
    mtime = path.stat().st_mtime_ns
    spare = tmp_path / "new.pem"
    spare.write_bytes(new)
    os.utime(spare, ns=(mtime, mtime))  # even with the same time: another inode
    spare.replace(path)
    assert keys.key("a.example", setting).public_record() == record(new)
