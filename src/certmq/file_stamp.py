"""What tells a file that changed on disk from the one read before, cheaply enough to ask every
second: its inode (a file replaced by renaming another over it), modification time and size."""

from __future__ import annotations

from pathlib import Path

FileStamp = tuple[int, int, int]


def file_stamp(path: Path) -> FileStamp | None:
    """The stamp of ``path``; None when it cannot be read (missing, no permission)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size
