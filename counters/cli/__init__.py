"""The command line, `counters`: serving, a remote client of a gateway, and storage's upkeep.

- `commands.py`: the commands and `main`;
- `serve.py`: `counters serve`, a gateway and the Ray it needs;
- `remote.py`, `output.py`: the HTTP client the remote commands use, and how they print;
- `transfer.py`: export and import, through a gateway;
- `storage_commands.py`, `backup.py`: backup, restore and reshard, on the storage itself;
- `progress.py`: a progress bar on a terminal, nothing elsewhere.
"""

from __future__ import annotations

from .commands import main

__all__ = ["main"]
