"""Images read where they lie inside tar shards: a member's bytes by offset, no unpacked copy.

A shard folder (``data.shards``) is decoded into the decoded-image cache like an image folder,
but its images are tar members, not files. The decoding workers take each image as a string
(the file list goes to them once, see ``data.decode_workers``), so a member travels as a
*reference*: the shard's path, the member's data offset and size, and its name, joined by NUL,
which no path can contain. ``image_source`` turns either kind into what Pillow opens: the
path itself, or the member's bytes (one seek and one read of the shard) as an in-memory file
that names itself ``SHARD:MEMBER`` in messages.
"""

from __future__ import annotations

import io
from pathlib import Path

from convlens.errors import ConvlensError, printable
from convlens.storage import os_reason

SEPARATOR = "\0"  # never in a path: a string holding it is a member reference


def member_reference(shard: Path, offset: int, size: int, name: str) -> str:
    """The string that stands for member ``name`` of ``shard`` (data at ``offset``, ``size`` bytes)."""
    return SEPARATOR.join((str(shard), str(offset), str(size), name))


class MemberFile(io.BytesIO):
    """A tar member's bytes as a file; ``str()`` names it ``SHARD:MEMBER`` (for messages)."""

    def __init__(self, data: bytes, where: str):
        super().__init__(data)
        self.where = where

    def __str__(self) -> str:
        return self.where


def image_source(file: str | Path) -> Path | MemberFile:
    """What to open for ``file``: a path as it is, a member reference as the member's bytes."""
    text = str(file)
    if SEPARATOR not in text:
        return Path(text)
    shard, offset, size, name = text.split(SEPARATOR)
    where = printable(f"{shard}:{name}")
    try:
        with open(shard, "rb") as handle:
            handle.seek(int(offset))
            data = handle.read(int(size))
    except OSError as exc:  # a shard gone or unreadable since it was listed: skipped, as a bad file
        raise ConvlensError(f"{where}: cannot read the shard ({os_reason(exc)})") from None
    if len(data) != int(size):
        raise ConvlensError(f"{where}: the shard ends inside this member (truncated since it was listed)")
    return MemberFile(data, where)
