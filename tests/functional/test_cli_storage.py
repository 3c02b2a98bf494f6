"""The storage commands and export/import, as a user runs them: real `counters` processes
against a real `counters serve` and its storage dir."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from counters.storage import StorageDir
from counters.testing import Service


def counters(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "counters", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


def values(url: str, *names: str) -> dict[str, int]:
    result = counters("get", *names, "--url", url, "--json")
    assert result.returncode == 0, result.stderr
    return {v["name"]: v["count"] for v in map(json.loads, result.stdout.splitlines())}


@pytest.mark.slow
def test_backup_reshard_restore_export_and_import_from_the_command_line(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    backup = tmp_path / "counters.backup"
    names = [f"cli-{i}" for i in range(12)]
    expected = {name: i * 3 + 1 for i, name in enumerate(names)}
    with Service(storage, "--shards", "2") as service:
        url = f"http://127.0.0.1:{service.port}"
        for name, count in expected.items():
            assert counters("incr", name, str(count), "--url", url).returncode == 0

        taken = counters("backup", str(backup), "--storage-dir", str(storage))
        assert taken.returncode == 0, taken.stderr
        assert taken.stdout.startswith(f"backed up {len(names)} counters")
        assert taken.stderr == ""  # no progress bar when not a terminal
        again = counters("backup", str(backup), "--storage-dir", str(storage))
        assert again.returncode == 2
        assert "--force" in again.stderr

        busy = counters("reshard", "--shards", "3", "--storage-dir", str(storage))
        assert busy.returncode == 2
        assert "in use" in busy.stderr

        exported = tmp_path / "export.jsonl"
        result = counters("export", "--url", url, "-o", str(exported))
        assert result.returncode == 0, result.stderr
        assert len(exported.read_text().splitlines()) == len(names)
        counters("set", "cli-0", "-50", "--url", url)
        counters("delete", "cli-1", "--url", url)
        first = counters("import", str(exported), "--url", url, "--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout) == {
            "set": 2,
            "unchanged": len(names) - 2,
            "conflicts": [],
        }
        second = counters("import", str(exported), "--url", url)
        assert second.stdout.strip() == f"set 0 counters, {len(names)} already at their count"
        assert values(url, *names) == expected

    resharded = counters("reshard", "--shards", "3", "--storage-dir", str(storage))
    assert resharded.returncode == 0, resharded.stderr
    assert "now has 3 shard(s)" in resharded.stdout
    restored = tmp_path / "restored"
    result = counters("restore", str(backup), "--storage-dir", str(restored), "--shards", "1")
    assert result.returncode == 0, result.stderr
    refused = counters("restore", str(backup), "--storage-dir", str(restored))
    assert refused.returncode == 2
    assert "--force" in refused.stderr

    with Service(storage) as service:  # the dir's own count now: 3
        assert values(f"http://127.0.0.1:{service.port}", *names) == expected
    with contextlib.closing(StorageDir(restored).snapshot()) as snapshot:
        assert {s.name: json.loads(s.state["count"])[0] for s in snapshot} == expected
