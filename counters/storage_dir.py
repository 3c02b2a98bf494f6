"""The storage directory: one SQLite file per host actor, and the layout they were written with.

A storage directory is bound to one layout (object class, placement, shard count) the first time
a host opens it, recorded in ``layout.json``. Opening it later with another layout is refused:
names would hash onto other files and their values would seem lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from .errors import LayoutMismatch, StorageFailed
from .placement import Layout, Placement, host_file_name

__all__ = ["StorageDir"]

LAYOUT_FILE = "layout.json"


class StorageDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def host_path(self, host: str) -> Path:
        return self.path / "hosts" / host_file_name(host)

    def recorded_shards(self, class_name: str) -> int | None:
        """The shard count this dir was laid out with for `class_name`, sharded; else None.

        None too when nothing was recorded, or it cannot be read: binding a layout says why.
        """
        try:
            recorded = json.loads((self.path / LAYOUT_FILE).read_text())
        except (OSError, ValueError):
            return None
        sharded = recorded.get("placement") == Placement.SHARDED.value
        shards = recorded.get("shards")
        ours = sharded and recorded.get("class_name") == class_name
        return shards if ours and isinstance(shards, int) else None

    def bind_layout(self, layout: Layout) -> None:
        """Record `layout` on first use; raise LayoutMismatch if another one was recorded."""
        wanted = {
            "class_name": layout.class_name,
            "placement": layout.placement.value,
            "shards": layout.shards if layout.placement is Placement.SHARDED else None,
        }
        target = self.path / LAYOUT_FILE
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                # Write aside, then link: of several hosts starting at once exactly one wins,
                # and nobody ever reads a half-written file.
                fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".layout-")
                try:
                    with os.fdopen(fd, "w") as out:
                        json.dump(wanted, out, indent=2)
                        out.flush()
                        os.fsync(out.fileno())
                    with contextlib.suppress(FileExistsError):  # another host won
                        os.link(tmp, target)
                finally:
                    os.unlink(tmp)
            recorded = json.loads(target.read_text())
        except (OSError, ValueError) as error:
            raise StorageFailed(f"cannot read or write {target}: {error}") from None
        if recorded != wanted:
            raise LayoutMismatch(
                f"storage dir {self.path} holds data laid out as {recorded}, "
                f"but this service is configured as {wanted}; use the same placement and shard "
                "count, or another storage dir"
            )
