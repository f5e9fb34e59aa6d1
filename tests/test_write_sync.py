"""Writing outputs: every staged file is synced before the first rename, serially for a
few files and in threads for many (``fwgen.build._sync``); a file that cannot be synced
is one located error naming it, and nothing is written."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fwgen import build as build_module
from fwgen.build import SERIAL_SYNC_MAX, write_atomically
from fwgen.errors import PolicyError


def record_syncs(monkeypatch: pytest.MonkeyPatch, out: Path, placed: str) -> list[int]:
    """fwgen's fsync, recording each call (the list returned) and failing the test when a
    file ``placed`` (a glob under ``out``) is in place already."""
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        assert not any(out.glob(placed)), "a file was renamed into place before every file was synced"
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(build_module.os, "fsync", fsync)
    return synced


def fail_syncs(monkeypatch: pytest.MonkeyPatch, bad: Callable[[Path], bool]) -> None:
    """fwgen's open and fsync, so that syncing each file for which ``bad(path)`` holds
    fails with EIO."""
    names: dict[int, str] = {}
    real_open, real_fsync = os.open, os.fsync

    def open_(path: str, flags: int, *args: int) -> int:
        fd = real_open(path, flags, *args)
        names[fd] = str(path)
        return fd

    def fsync(fd: int) -> None:
        if bad(Path(names[fd])):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(build_module.os, "open", open_)
    monkeypatch.setattr(build_module.os, "fsync", fsync)


@pytest.mark.parametrize("count", [3, SERIAL_SYNC_MAX + 1, 200])
def test_every_file_is_synced_before_any_is_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     count: int) -> None:
    out = tmp_path / "out"
    files = {f"h{i:03}/f.txt": f"{i}\n" for i in range(count)}
    synced = record_syncs(monkeypatch, out, "*/f.txt")
    written = write_atomically(out, files)
    assert len(synced) == count and len(written) == count
    assert {p.relative_to(out).as_posix(): p.read_text(encoding="utf-8") for p in written} == files


@pytest.mark.parametrize("count", [3, SERIAL_SYNC_MAX + 1, 200])
def test_a_file_that_cannot_be_synced_is_an_error_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int,
) -> None:
    out = tmp_path / "out"
    files = {f"h{i:03}/f.txt": f"{i}\n" for i in range(count)}
    bad = {count // 2, count - 1}  # the files whose sync fails; the error names the first
    fail_syncs(monkeypatch, lambda path: int(path.parent.name[1:]) in bad)
    with pytest.raises(PolicyError) as caught:
        write_atomically(out, files)
    assert str(caught.value) == f"fwgen: cannot write {out / f'h{count // 2:03}' / 'f.txt'}: {os.strerror(errno.EIO)}"
    assert not out.exists()  # no file, no temporary file, no directory made for them


def _fleet(root: Path, count: int) -> Path:
    fleet = root / "fleet"
    fleet.mkdir()
    for i in range(count):
        (fleet / f"h{i:02}.yaml").write_text(
            f"version: 1\nname: h{i:02}\ntargets: [nftables]\ndefaults: {{inbound: allow}}\n"
            f"rules:\n  - action: deny\n    ports: [{1000 + i}]\n", encoding="utf-8")
    return fleet


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_fleet_syncs_every_file_before_any_is_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         jobs: int) -> None:
    """A fleet's files are synced as the policies are built (``build.Syncer``), and all of
    them before the first rename, in one process as with workers."""
    from click.testing import CliRunner

    from fwgen.cli import main

    out = tmp_path / "out"
    synced = record_syncs(monkeypatch, out, "*/nftables/*.nft")
    result = CliRunner().invoke(main, ["build", str(_fleet(tmp_path, 24)), "-o", str(out), "--jobs", str(jobs)])
    assert result.exit_code == 0, result.output
    assert len(synced) == 24 and len(list(out.glob("*/nftables/*.nft"))) == 24


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_fleet_file_that_cannot_be_synced_is_an_error_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int,
) -> None:
    from click.testing import CliRunner

    from fwgen.cli import main

    out = tmp_path / "out"
    fail_syncs(monkeypatch, lambda path: path.parent.parent.name in {"h07", "h19"})
    result = CliRunner().invoke(main, ["build", str(_fleet(tmp_path, 24)), "-o", str(out), "--jobs", str(jobs)])
    assert result.exit_code == 1
    assert result.stderr == f"fwgen: cannot write {out / 'h07' / 'nftables' / 'h07.nft'}: {os.strerror(errno.EIO)}\n"
    assert not out.exists()  # no file, no temporary file, no directory made for them
