"""The fault-injecting file system of the crash tests, tested on its own (tests/faultfs.py)."""

from __future__ import annotations

import errno
import os

import pytest

from shardwalk import _fs
from shardwalk._files import atomic_write_bytes, make_dirs
from tests.faultfs import FaultFS, PowerLoss


def _write(path, data: bytes, *, sync: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            _fs.fsync(f.fileno())


def test_install_time_state_is_durable(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a").write_bytes(b"old")
    fs = FaultFS(root)
    (root / "sub" / "a").write_bytes(b"new, never fsynced")
    fs.crash()
    assert (root / "sub" / "a").read_bytes() == b"old"


def test_written_but_not_fsynced_file_vanishes(fault_fs):
    root = fault_fs.root
    _write(root / "f", b"data", sync=False)
    fault_fs.crash()
    assert not (root / "f").exists()


def test_fsynced_file_without_directory_fsync_vanishes(fault_fs):
    root = fault_fs.root
    _write(root / "f", b"data", sync=True)
    fault_fs.crash()
    assert not (root / "f").exists()


def test_directory_entry_without_file_fsync_comes_back_empty(fault_fs):
    root = fault_fs.root
    _write(root / "f", b"data", sync=False)
    _fs.fsync_dir(root)
    fault_fs.crash()
    assert (root / "f").read_bytes() == b""


def test_file_reverts_to_its_last_fsync(fault_fs):
    root = fault_fs.root
    _write(root / "f", b"one", sync=True)
    _fs.fsync_dir(root)
    with open(root / "f", "ab") as f:
        f.write(b" two")
    fault_fs.crash()
    assert (root / "f").read_bytes() == b"one"


def test_rename_without_directory_fsync_is_undone(fault_fs):
    root = fault_fs.root
    _write(root / "target", b"old", sync=True)
    _fs.fsync_dir(root)
    _write(root / "tmp", b"new", sync=True)
    _fs.replace(root / "tmp", root / "target")
    fault_fs.crash()
    assert (root / "target").read_bytes() == b"old"
    assert not (root / "tmp").exists()
    # and with the directory fsync it holds
    atomic_write_bytes(root / "target", b"new")
    fault_fs.crash()
    assert (root / "target").read_bytes() == b"new"


def test_removal_without_directory_fsync_is_undone(fault_fs):
    root = fault_fs.root
    _write(root / "f", b"keep", sync=True)
    _fs.fsync_dir(root)
    _fs.unlink(root / "f")
    fault_fs.crash()
    assert (root / "f").read_bytes() == b"keep"


def test_new_directory_needs_its_parent_fsynced(fault_fs):
    root = fault_fs.root
    os.mkdir(root / "d")
    _write(root / "d" / "f", b"x", sync=True)
    _fs.fsync_dir(root / "d")
    fault_fs.crash()
    assert not (root / "d").exists()
    make_dirs(root / "d" / "e")  # fsyncs each parent after its new entry
    _write(root / "d" / "e" / "f", b"x", sync=True)
    _fs.fsync_dir(root / "d" / "e")
    fault_fs.crash()
    assert (root / "d" / "e" / "f").read_bytes() == b"x"


def test_hard_links_share_content(fault_fs, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _write(outside / "p", b"posting", sync=True)  # fsynced outside the tracked root
    _fs.link(outside / "p", fault_fs.root / "p")
    _fs.fsync_dir(fault_fs.root)
    fault_fs.crash()
    assert (fault_fs.root / "p").read_bytes() == b"posting"


def test_copy_is_fsynced_by_copyfile(fault_fs, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _write(outside / "p", b"posting", sync=True)
    _fs.copyfile(outside / "p", fault_fs.root / "p")
    _fs.fsync_dir(fault_fs.root)
    fault_fs.crash()
    assert (fault_fs.root / "p").read_bytes() == b"posting"


def test_reused_inode_number_starts_with_nothing_durable(fault_fs):
    root = fault_fs.root
    _write(root / "a", b"first", sync=True)
    _fs.fsync_dir(root)
    _fs.unlink(root / "a")
    _write(root / "b", b"second", sync=False)  # may get a's inode number
    _fs.fsync_dir(root)
    fault_fs.crash()
    assert not (root / "a").exists()
    assert (root / "b").read_bytes() == b""


def test_injected_fsync_and_write_failures(fault_fs):
    root = fault_fs.root
    fault_fs.fail("fsync", 2, errno.EIO)
    _write(root / "f", b"1", sync=True)
    with pytest.raises(_fs.SyncFailed) as info:
        _fs.fsync_dir(root)
    assert info.value.errno == errno.EIO
    _fs.fsync_dir(root)  # one shot
    fault_fs.fail("write", 1, errno.ENOSPC)
    fd = os.open(root / "g", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as info:
            _fs.write(fd, b"abcdef")
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert (root / "g").read_bytes() == b"abc"  # a failed write can leave part of its bytes


def test_power_cut_at_an_operation(fault_fs):
    root = fault_fs.root
    fault_fs.power_cut_at("fsync", 2)
    _write(root / "f", b"1", sync=True)
    with pytest.raises(PowerLoss):
        _fs.fsync_dir(root)
    with pytest.raises(PowerLoss):  # nothing more reaches the disk
        _fs.unlink(root / "f")
    fault_fs.crash()
    assert not (root / "f").exists()
    atomic_write_bytes(root / "f", b"2")  # the power is back
    fault_fs.crash()
    assert (root / "f").read_bytes() == b"2"
