"""A journal of filesystem calls for durability tests: ordering spy, simulated crashes, simulated power loss.

:class:`FsJournal` wraps ``os.open``, ``os.write``, ``os.fsync``,
``os.rename``, ``os.replace``, ``os.mkdir``, ``os.unlink`` and ``os.rmdir``
(everything ``esper_func.checkpoint`` and ``esper_func.runs`` change the
disk with) and records each call as an :class:`Op`, with the inode it
touched. It can:

- *crash* before the ``crash_at``-th mutating call: that call and every
  later one raise :class:`SimulatedCrash` (a ``BaseException``), so no
  clean-up handler can change the disk any more -- the state a ``kill -9``
  leaves behind;
- *lose power*: :meth:`power_loss` undoes what was not durable, the way a
  machine losing power may: a file written but not fsynced afterwards is
  truncated to nothing, and a directory entry (a creation, a rename) whose
  directory was not fsynced afterwards is reverted (newest first).

The model is deliberately pessimistic (everything not made durable is lost)
and only as detailed as the code under test needs: files are created fresh
(``O_EXCL``) and replaced by rename.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


class SimulatedCrash(BaseException):
    """The process "died" here; nothing after this point ran."""


class DiskFull(OSError):
    """An injected I/O failure (the call fails; the process lives on)."""


@dataclasses.dataclass
class Op:
    kind: str  # create | mkdir | write | fsync | rename | remove
    path: str  # the path (for rename: the source)
    dst: str | None = None  # rename target
    inode: int | None = None  # the file written/fsynced/created
    parent: int | None = None  # inode of the directory whose entries changed
    dst_parent: int | None = None  # rename: inode of the target's directory
    is_dir: bool = False
    replaced: bytes | None = None  # rename over an existing file: its old bytes


def _ino(path: str | os.PathLike[str]) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


class FsJournal:
    """Install with :meth:`installed`; read :attr:`ops` afterwards."""

    MUTATING = ("create", "mkdir", "write", "fsync", "rename", "remove")

    def __init__(self, crash_at: int | None = None, *, fail_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.fail_at = fail_at  # raise one OSError (disk full) at this step, then carry on
        self.failed = False
        self.ops: list[Op] = []
        self.crashed = False
        self._fds: dict[int, str] = {}
        self._real: dict[str, Any] = {}

    # ------------------------------------------------------------------ recording

    @property
    def steps(self) -> int:
        """Mutating calls made so far (the crash points a save offers)."""
        return sum(op.kind in self.MUTATING for op in self.ops)

    def _gate(self) -> None:
        if self.crashed:
            raise SimulatedCrash("the process is dead")
        if self.crash_at is not None and self.steps >= self.crash_at:
            self.crashed = True
            raise SimulatedCrash(f"crash before step {self.crash_at}")
        if self.fail_at is not None and not self.failed and self.steps >= self.fail_at:
            self.failed = True
            raise DiskFull(28, "No space left on device")

    def _resolve(self, path: Any, dir_fd: int | None) -> str:
        p = os.fsdecode(path)
        if dir_fd is not None and not os.path.isabs(p):
            return os.path.join(self._fds.get(dir_fd, f"<fd {dir_fd}>"), p)
        return os.path.abspath(p)

    def _open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        full = self._resolve(path, dir_fd)
        creating = bool(flags & os.O_CREAT) and not os.path.lexists(full)
        if creating:
            self._gate()
        fd = self._real["open"](path, flags, mode, dir_fd=dir_fd)
        self._fds[fd] = full
        if creating:
            self.ops.append(Op("create", full, inode=os.fstat(fd).st_ino, parent=_ino(os.path.dirname(full))))
        return fd

    def _write(self, fd: int, data: Any) -> int:
        self._gate()
        n = self._real["write"](fd, data)
        self.ops.append(Op("write", self._fds.get(fd, f"<fd {fd}>"), inode=os.fstat(fd).st_ino))
        return n

    def _fsync(self, fd: int) -> None:
        # Recorded, not performed: durability is what power_loss() simulates, and real fsyncs are slow.
        self._gate()
        st = os.fstat(fd)
        self.ops.append(Op("fsync", self._fds.get(fd, f"<fd {fd}>"), inode=st.st_ino, is_dir=stat.S_ISDIR(st.st_mode)))

    def _close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        self._real["close"](fd)

    def _rename(self, which: str) -> Any:
        def rename(src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
            self._gate()
            s, d = self._resolve(src, src_dir_fd), self._resolve(dst, dst_dir_fd)
            replaced = None
            if os.path.isfile(d):
                with open(d, "rb") as f:
                    replaced = f.read()
            op = Op(
                "rename", s, dst=d, inode=_ino(s), parent=_ino(os.path.dirname(s)),
                dst_parent=_ino(os.path.dirname(d)), is_dir=os.path.isdir(s), replaced=replaced,
            )
            self._real[which](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            self.ops.append(op)

        return rename

    def _mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        self._gate()
        full = self._resolve(path, dir_fd)
        self._real["mkdir"](path, mode, dir_fd=dir_fd)
        self.ops.append(Op("mkdir", full, inode=_ino(full), parent=_ino(os.path.dirname(full)), is_dir=True))

    def _remove(self, which: str) -> Any:
        def remove(path: Any, *, dir_fd: int | None = None) -> None:
            self._gate()
            full = self._resolve(path, dir_fd)
            self._real[which](path, dir_fd=dir_fd)
            self.ops.append(Op("remove", full))

        return remove

    @contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[FsJournal]:
        for name in ("open", "write", "fsync", "close", "rename", "replace", "mkdir", "unlink", "rmdir"):
            self._real[name] = getattr(os, name)
        wrappers = {
            "open": self._open, "write": self._write, "fsync": self._fsync, "close": self._close,
            "rename": self._rename("rename"), "replace": self._rename("replace"), "mkdir": self._mkdir,
            "unlink": self._remove("unlink"), "rmdir": self._remove("rmdir"),
        }
        with monkeypatch.context() as m:
            for name, fn in wrappers.items():
                m.setattr(os, name, fn)
            yield self

    # ------------------------------------------------------------------ durability

    def _fsynced_after(self, i: int, inode: int | None) -> bool:
        return inode is not None and any(op.kind == "fsync" and op.inode == inode for op in self.ops[i + 1 :])

    def not_durable(self) -> list[tuple[int, Op]]:
        """Operations a power loss right now could undo."""
        lost = []
        for i, op in enumerate(self.ops):
            if op.kind == "write" and not self._fsynced_after(i, op.inode):
                lost.append((i, op))
            elif op.kind in ("create", "mkdir") and not self._fsynced_after(i, op.parent):
                lost.append((i, op))
            elif op.kind == "rename" and not (
                self._fsynced_after(i, op.parent) and self._fsynced_after(i, op.dst_parent)
            ):
                lost.append((i, op))
        return lost

    def power_loss(self, root: Path) -> list[str]:
        """Undo, under ``root``, every change that was not durable; return what was undone."""
        undone = []
        lost = self.not_durable()
        truncate = {op.inode for _, op in lost if op.kind == "write"}
        for _, op in sorted((x for x in lost if x[1].kind != "write"), key=lambda x: -x[0]):
            if op.kind == "rename":
                assert op.dst is not None
                if os.path.lexists(op.dst) and not os.path.lexists(op.path):
                    self._real["rename"](op.dst, op.path)
                    if op.replaced is not None:
                        with open(op.dst, "wb") as f:
                            f.write(op.replaced)
                    undone.append(f"rename {op.path} -> {op.dst}")
            elif os.path.lexists(op.path):
                shutil.rmtree(op.path) if op.is_dir and os.path.isdir(op.path) else self._real["unlink"](op.path)
                undone.append(f"{op.kind} {op.path}")
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                if _ino(path) in truncate:
                    with open(path, "r+b") as f:
                        f.truncate(0)
                    undone.append(f"write {path}")
        return undone
