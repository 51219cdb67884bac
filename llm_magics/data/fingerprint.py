"""What a data file's cached Arrow copy and tokens are keyed on: its content, not its size and mtime.

A streamed xxh3-128 of the bytes (xxhash: several GB/s, so a 1 GB corpus costs well under a second when
it is in the page cache; `bench/data_scale.py` measures it). Size + mtime is not enough: `cp -p`, `rsync`
and `git checkout` can leave a rewritten file with the same size and its old mtime, and its stale tokens
would be scored. Within one process the digest is remembered per (device, inode, size, mtime, ctime):
the ctime changes on every write and no user-level tool can set it back, so a repeated run in the same
kernel does not read the file again, and a rewritten file is always hashed anew.
"""

from __future__ import annotations

import os
from pathlib import Path

CHUNK = 8 << 20
_known: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    import xxhash

    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _known:
        digest = xxhash.xxh3_128()
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        _known[key] = digest.hexdigest()
    return _known[key]


def content_key(files: list[Path], root: Path | None = None) -> str:
    """One key for a file or a folder of files: each file's name (relative to the folder) and digest."""
    import xxhash

    combined = xxhash.xxh3_128()
    for file in files:
        name = str(file.relative_to(root)) if root else file.name
        combined.update(f"{name}\0{file_digest(file)}\n".encode())
    return combined.hexdigest()
