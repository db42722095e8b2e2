"""List the image files under a folder, lazily and safely.

    skipped = collections.Counter()
    for relative in scan_images("scans/", skipped):   # "a/3.png", "b/scan 7.JPG", ...
        ...
    print(skipped)   # Counter({'not an image': 12, 'link out of the folder': 1})

- One directory at a time with os.scandir: nothing holds the whole listing, only the folders still
  to visit. Files come in directory order (not sorted: sorting needs the whole listing).
- Image files are matched by extension (netcore.images.EXTENSIONS, any case); every other entry
  is counted in `skipped` under a reason, never silently dropped.
- Symbolic links are followed only when they resolve inside the root: a link out of the folder is
  skipped. Each directory is entered once (by device and inode), so a symlink loop cannot hang
  the scan and a linked directory is not listed twice.
- FIFOs, sockets and devices are skipped: opening a FIFO named x.png would block forever.

`LocalFiles(root)` opens a listed file again by its relative path (picklable, for worker
processes). Run `python -m netcore.scan FOLDER` to print a listing.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from netcore.errors import DataFileError
from netcore.images import is_image_name


def scan_images(root: str | Path, skipped: Counter | None = None) -> Iterator[str]:
    """Yield the relative paths ("/"-separated) of the image files under `root`; count every
    other entry in `skipped` by reason. Raises DataFileError if `root` is not a folder."""
    skipped = skipped if skipped is not None else Counter()
    real_root = os.path.realpath(root)
    try:
        root_stat = os.stat(real_root)
    except OSError as error:
        raise DataFileError(root, f"cannot read the folder ({error.strerror})") from None
    if not stat.S_ISDIR(root_stat.st_mode):
        raise DataFileError(root, "is not a folder")
    seen = {(root_stat.st_dev, root_stat.st_ino)}
    pending = [("", real_root)]
    while pending:
        prefix, directory = pending.pop()
        subfolders = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    relative = prefix + entry.name
                    kind = _kind(entry, real_root, seen)
                    if kind == "image":
                        yield relative
                    elif kind == "folder":
                        subfolders.append((relative + "/", entry.path))
                    else:
                        skipped[kind] += 1
        except OSError:
            skipped["unreadable folder"] += 1
        pending.extend(reversed(subfolders))


def _kind(entry: os.DirEntry, real_root: str, seen: set) -> str:
    """'image', 'folder', or the reason the entry is skipped. Plain entries cost no system call
    (the type comes from the directory listing); links and folders cost one stat."""
    try:
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            if os.path.commonpath([real_root, target]) != real_root:
                return "link out of the folder"
            if not os.path.exists(target):
                return "broken link"
        if entry.is_dir():
            info = entry.stat()
            identity = (info.st_dev, info.st_ino)
            if identity in seen:
                return "folder already listed (link loop or repeat)"
            seen.add(identity)
            return "folder"
        if not entry.is_file():
            return "not a regular file"
    except (OSError, ValueError):
        return "unreadable entry"
    return "image" if is_image_name(entry.name) else "not an image"


class LocalFiles:
    """Opens files by their path relative to a root folder."""

    def __init__(self, root: str | Path):
        self.root = str(root)

    def __call__(self, relative: str) -> BinaryIO:
        return open(os.path.join(self.root, relative), "rb")

    def __repr__(self) -> str:
        return f"LocalFiles({self.root!r})"


if __name__ == "__main__":
    import sys

    counts: Counter = Counter()
    for path in scan_images(sys.argv[1], counts):
        print(path)
    print(f"skipped: {dict(counts)}", file=sys.stderr)
