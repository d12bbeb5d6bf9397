"""Power-loss crash states, in the spirit of ALICE ("All File Systems Are Not Created
Equal", OSDI 2014): record what a program asked of the file system, then rebuild every
file state a power cut could have left (not a test module itself).

Why: after SIGKILL the kernel's page cache still holds every write, fsynced or not,
so a process-death test cannot tell an acknowledgement sent before the fsync returned,
a missing fsync, or writes persisted in the wrong order from a correct commit.  A
power cut keeps only what the disk was told to keep.

Recording.  The writer runs under ``strace -f -y -xx`` (every buffer in full, as hex;
``-y`` names the file behind every descriptor).  Of the calls that change files
(``openat`` with ``O_CREAT``/``O_TRUNC``, ``pwrite64``, ``ftruncate``, ``unlink``,
``rename``, ``fsync``/``fdatasync`` on files and on the directory) those on files of a
watched database directory become events, in the one order strace saw them; so do
the lines the writer appends to its acknowledgement log with ``write`` ("a ID": the
unit was acknowledged, "f ID": it failed), which puts acknowledgements and file
operations in a single order.  SQLite's ``-shm`` file is ignored: it is a memory map
of shared state, never persistent, rebuilt from the WAL on open.  Calls the model
below cannot replay (``write`` without an offset, ``writev``, ``fallocate``, a shared
writable ``mmap`` of a database file, anything on an unlinked file) fail the
recording instead of being silently missed.  Paths are absolute (the library resolves
them at ``configure``), so a relative ``unlink`` is never one of SQLite's.

Ordering.  A call takes effect when it returns (strace prints the return before the
thread runs on, so whatever the thread does next comes later in the trace); an
acknowledgement counts from the moment its ``write`` starts, the earliest place the
unit could have been reported.  An fsync makes durable only what returned before the
fsync started.

Persistence model (a power cut).  For each file, the contents as of its last fsync are
durable; every write or truncate since then may or may not have reached the disk,
independently of the others (the page cache writes back, and a disk without a flush
persists sectors, in any order: SQLite's own documented assumption).  Creating,
unlinking or renaming a file is durable only once its directory has been fsynced;
before that, each such change may or may not have reached the disk.  A write is
persisted whole or not at all (no torn writes).

Crash states.  The recording is cut just before and just after every fsync and every
acknowledgement (and at both ends).  At each cut, of the operations not yet durable,
the replay keeps: none, all (what SIGKILL leaves), prefixes in issue order, all but
one (ALICE's reordering heuristic), and a few random subsets; identical file sets are
examined once.  Each state is a fresh copy of the database files (never a ``-shm``)
opened with pysqlite3, so SQLite runs its own recovery (a hot journal rolled back, a
WAL replayed up to its last valid commit) before ``PRAGMA integrity_check`` and the
test's query.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pysqlite3.dbapi2 as dbapi

# "?": a call this architecture lacks (open, creat, unlink, rename on arm64) is no error.
TRACED_CALLS = ("?open,openat,?creat,write,pwrite64,writev,pwritev,pwritev2,ftruncate,"
                "fallocate,fsync,fdatasync,?unlink,unlinkat,?rename,renameat,?renameat2,mmap")
IGNORED_SUFFIX = "-shm"


class RecordingError(AssertionError):
    """The trace shows something the persistence model cannot replay."""


@dataclass(frozen=True)
class Event:
    """One recorded operation on a watched directory or its acknowledgement log.

    kind: ``create`` (an open with O_CREAT: creates ``name`` unless it exists), ``unlink``,
    ``rename`` (``name`` to ``target``), ``write`` (``data`` at ``offset``), ``truncate``
    (to ``offset`` bytes), ``fsync`` (of file ``name``), ``dirsync`` (of the directory),
    ``ack`` and ``fail`` (of unit ``name``).  ``key`` is the event's place in the trace;
    ``since`` (fsync, dirsync) the key of the call's start: it persists what came before.
    """

    key: int
    kind: str
    name: str
    target: str = ""
    offset: int = 0
    data: bytes = b""
    since: int = 0


# -- recording ----------------------------------------------------------------------------


def record(command: list[str], trace_path: Path, env: dict, timeout: float
           ) -> subprocess.CompletedProcess:
    """Run ``command`` under strace, following its threads; the trace goes to trace_path."""
    strace = ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "signal=none", "-y", "-xx",
              "-s", "1048576", "-e", f"trace={TRACED_CALLS}", "-o", str(trace_path), "--"]
    return subprocess.run(strace + command, env=env, capture_output=True, timeout=timeout)


_HEX = re.compile(r"(?:\\x[0-9a-f]{2})*")
_LINE = re.compile(r"(\d+) +(.*)")
_CALL = re.compile(r"(\w+)\((.*)\) += (-?\d+|0x[0-9a-f]+|\?)(?:<(" + _HEX.pattern + r")>)?")
_FD = re.compile(r"(-?\d+|AT_FDCWD)<(" + _HEX.pattern + r")>")
_STRING = re.compile(r'"(' + _HEX.pattern + r')"(\.\.\.)?')


def _text(hex_escaped: str) -> str:
    return bytes.fromhex(hex_escaped.replace("\\x", "")).decode("utf-8", "surrogateescape")


def _path_of(token: str) -> str:
    """The path strace's ``-y`` shows for a descriptor argument such as ``5</a/b>``."""
    match = _FD.fullmatch(token)
    if match is None:
        raise RecordingError(f"no -y path in {token!r}")
    return _text(match.group(2))


def _string(token: str) -> bytes:
    match = _STRING.fullmatch(token)
    if match is None:
        raise RecordingError(f"not a string argument: {token[:80]!r}")
    if match.group(2):
        raise RecordingError("strace cut a buffer short: raise its -s")
    return bytes.fromhex(match.group(1).replace("\\x", ""))


def _calls(lines):
    """(start line, end line, name, arguments, result, result path) per completed call.

    With several threads strace splits a call it sees interrupted into ``... <unfinished
    ...>`` and ``<... name resumed>...``; the two halves are joined here.
    """
    started: dict[str, tuple[int, str]] = {}
    for index, line in enumerate(lines):
        match = _LINE.fullmatch(line.rstrip("\n"))
        if match is None:
            continue
        tid, text = match.groups()
        start = index
        if text.endswith(" <unfinished ...>"):
            started[tid] = (index, text[:-len(" <unfinished ...>")])
            continue
        if text.startswith("<... "):
            if tid not in started:
                continue
            start, head = started.pop(tid)
            text = head + text[text.index("resumed>") + len("resumed>"):]
        call = _CALL.match(text)
        if call is None:
            continue
        name, arguments, result, result_path = call.groups()
        if result in ("?", "-1"):
            continue  # the call failed or never returned: it changed nothing
        yield start, index, name, arguments.split(", "), int(result, 0), (
            _text(result_path) if result_path is not None else None)


@dataclass
class Watched:
    """A database directory whose files are recorded, and its acknowledgement log."""

    directory: str
    log: str
    events: list[Event] = field(default_factory=list)


def parse(trace_path: Path, watched: dict[str, Watched]) -> None:
    """Fill each ``watched[...].events`` from the trace, in the order of their keys."""
    directories = {w.directory: w for w in watched.values()}
    logs = {w.log: w for w in watched.values()}
    root = _hex_of(os.path.commonpath([*directories, *logs]))
    with open(trace_path, encoding="ascii") as trace:
        lines = [line for line in trace if root in line or "resumed>" in line]
    for start, end, name, args, result, result_path in _calls(lines):
        for owner, event in _events(name, args, result, result_path, start, end,
                                    directories, logs):
            owner.events.append(event)
    for w in watched.values():
        w.events.sort(key=lambda event: event.key)


def _hex_of(path: str) -> str:
    return "".join("\\x%02x" % byte for byte in path.encode())


def _owner(path: str, directories: dict[str, Watched]):
    """(watched directory, file name) for a database file, (it, ".") for the directory."""
    if path in directories:
        return directories[path], "."
    parent, name = os.path.split(path)
    if parent in directories and not name.endswith(IGNORED_SUFFIX):
        return directories[parent], name
    return None, None


def _events(call, args, result, result_path, start, end, directories, logs):
    """The events one completed call makes: (watched, Event) pairs, usually none."""
    if call in ("write", "pwrite64") and _path_of(args[0]) in logs:
        text = _string(args[1]).decode()
        for line in text.splitlines():
            kind, unit = line.split()
            yield logs[_path_of(args[0])], Event(start, {"a": "ack", "f": "fail"}[kind], unit)
        return
    if call in ("open", "openat", "creat"):
        owner, name = _owner(result_path, directories) if result_path else (None, None)
        flags = args[2] if call == "openat" else args[1] if call == "open" else "O_CREAT|O_TRUNC"
        if owner is not None and name != ".":
            if "O_CREAT" in flags:
                yield owner, Event(end, "create", name)
            if "O_TRUNC" in flags:
                yield owner, Event(end, "truncate", name, offset=0)
        return
    if call in ("unlink", "unlinkat", "rename", "renameat", "renameat2"):
        paths = _paths_named(call, args)
        owner, name = _owner(paths[0], directories)
        if call.startswith("unlink"):
            if owner is not None:
                yield owner, Event(end, "unlink", name)
            return
        to_owner, target = _owner(paths[1], directories)
        if to_owner is not owner:
            raise RecordingError(f"rename into or out of a watched directory: {paths}")
        if owner is not None:
            yield owner, Event(end, "rename", name, target=target)
        return
    if call == "mmap":
        if args[4].startswith("-1"):
            return
        owner, name = _owner(_path_of(args[4]), directories)
        if owner is not None and "MAP_SHARED" in args[3] and "PROT_WRITE" in args[2]:
            raise RecordingError(f"{name} is mapped writable: its writes are invisible")
        return
    if not args or not _FD.fullmatch(args[0]):
        return
    path = _path_of(args[0])
    deleted = path.endswith(" (deleted)")
    owner, name = _owner(path.removesuffix(" (deleted)"), directories)
    if owner is None:
        return
    if deleted:
        raise RecordingError(f"{call} on unlinked {name}: not modelled")
    if call in ("fsync", "fdatasync"):
        kind = "dirsync" if name == "." else "fsync"
        yield owner, Event(end, kind, name, since=start)
    elif call in ("write", "pwrite64") and name != ".":
        if call == "write":
            raise RecordingError(f"write() without an offset to {name}: not modelled")
        data = _string(args[1])[:result]  # a short write wrote only its first bytes
        yield owner, Event(end, "write", name, offset=int(args[3]), data=data)
    elif call == "ftruncate":
        yield owner, Event(end, "truncate", name, offset=int(args[1]))
    else:
        raise RecordingError(f"{call} on {name}: not modelled")


def _paths_named(call: str, args: list[str]) -> list[str]:
    """The absolute paths an unlink or rename names (relative ones are never SQLite's)."""
    if call in ("unlink", "rename"):
        pairs = [(None, token) for token in args[:2 if call == "rename" else 1]]
    else:
        pairs = [(args[0], args[1])] + ([(args[2], args[3])] if call != "unlinkat" else [])
    paths = []
    for directory, token in pairs:
        path = _string(token).decode("utf-8", "surrogateescape")
        if directory is not None and not path.startswith("/"):
            path = os.path.join(_path_of(directory), path)
        paths.append(path)
    return paths


# -- the persistence model -------------------------------------------------------------


class Inode:
    """A file's contents: durable as of its last fsync, plus the operations since."""

    def __init__(self, data: bytes = b"") -> None:
        self.durable = bytearray(data)
        self.pending: list[Event] = []

    def contents(self, keep: set[int]) -> bytes:
        data = bytearray(self.durable)
        for event in self.pending:
            if event.key in keep:
                _apply(data, event)
        return bytes(data)


def _apply(data: bytearray, event: Event) -> None:
    if event.kind == "write":
        end = event.offset + len(event.data)
        if len(data) < event.offset:
            data.extend(bytes(event.offset - len(data)))
        data[event.offset:end] = event.data
    else:  # truncate
        if len(data) > event.offset:
            del data[event.offset:]
        else:
            data.extend(bytes(event.offset - len(data)))


class FileSystem:
    """One directory as the running program sees it and as a power cut would leave it."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.names = {name: Inode(data) for name, data in files.items()}
        self.durable_names = dict(self.names)
        self.pending_names: list[tuple[Event, Inode | None]] = []

    def apply(self, event: Event) -> None:
        kind = event.kind
        if kind == "create":
            if event.name not in self.names:  # else an open of an existing file
                inode = self.names[event.name] = Inode()
                self.pending_names.append((event, inode))
        elif kind == "unlink":
            del self.names[event.name]
            self.pending_names.append((event, None))
        elif kind == "rename":
            self.names[event.target] = self.names.pop(event.name)
            self.pending_names.append((event, self.names[event.target]))
        elif kind in ("write", "truncate"):
            self.names[event.name].pending.append(event)
        elif kind == "fsync":
            inode = self.names[event.name]
            for done in [e for e in inode.pending if e.key < event.since]:
                _apply(inode.durable, done)
                inode.pending.remove(done)
        elif kind == "dirsync":
            for done in [pair for pair in self.pending_names if pair[0].key < event.since]:
                _link(self.durable_names, *done)
                self.pending_names.remove(done)

    def pending(self) -> list[int]:
        """Keys of the operations a power cut now may or may not persist, in issue order."""
        inodes = {id(inode): inode for inode in self.durable_names.values()}
        inodes.update((id(inode), inode) for _, inode in self.pending_names if inode)
        keys = [event.key for event, _ in self.pending_names]
        keys += [event.key for inode in inodes.values() for event in inode.pending]
        return sorted(keys)

    def crash(self, keep: set[int]) -> dict[str, bytes]:
        """The files a power cut leaves if, of the pending operations, ``keep`` persisted."""
        names = dict(self.durable_names)
        for event, inode in self.pending_names:
            if event.key in keep:
                _link(names, event, inode)
        return {name: inode.contents(keep) for name, inode in names.items()}


def _link(names: dict[str, Inode], event: Event, inode: Inode | None) -> None:
    if event.kind == "create":
        names[event.name] = inode
    elif event.kind == "unlink":
        names.pop(event.name, None)
    elif event.name in names:  # rename
        names[event.target] = names.pop(event.name)


# -- crash states ----------------------------------------------------------------------


@dataclass
class CrashState:
    cut: int                  # how many recorded events had happened
    acked: frozenset          # the units acknowledged before the cut
    how: str                  # which pending operations persisted
    digest: str               # of the files; equal digests are examined once
    files: dict[str, bytes] | None  # the first state with a digest carries the files


SAMPLES_PER_KIND = 6  # prefixes, and all-but-one, per cut (all of them when fewer)
RANDOM_SUBSETS = 2


def cut_points(events: list[Event]) -> list[int]:
    """Just before and just after every fsync, directory fsync and acknowledgement."""
    marks = {0, len(events)}
    for index, event in enumerate(events):
        if event.kind in ("fsync", "dirsync", "ack", "fail"):
            marks.update((index, index + 1))
    return sorted(marks)


def _keep_sets(pending: list[int], rng: random.Random):
    """(description, keys kept) of the sampled choices among the pending operations."""
    count = len(pending)
    yield "none", set()
    yield "all", set(pending)
    for length in _sample(range(1, count), rng):
        yield f"first {length}/{count}", set(pending[:length])
    for skipped in _sample(range(count), rng):
        yield f"all but #{skipped + 1}/{count}", set(pending) - {pending[skipped]}
    for _ in range(RANDOM_SUBSETS if count > 2 else 0):
        yield f"random subset of {count}", {key for key in pending if rng.random() < 0.5}


def _sample(choices: range, rng: random.Random) -> list[int]:
    if len(choices) <= SAMPLES_PER_KIND:
        return list(choices)
    return sorted(rng.sample(choices, SAMPLES_PER_KIND))


def digest(files: dict[str, bytes]) -> str:
    hashed = hashlib.blake2b(digest_size=16)
    for name in sorted(files):
        hashed.update(b"%s\0%d\0" % (name.encode(), len(files[name])))
        hashed.update(files[name])
    return hashed.hexdigest()


def crash_states(initial: dict[str, bytes], events: list[Event], seed: int
                 ) -> Iterator[CrashState]:
    """Every sampled crash state of the recording, the files attached once per digest."""
    rng = random.Random(seed)
    fs = FileSystem(initial)
    cuts = set(cut_points(events))
    acked: set[str] = set()
    seen: set[str] = set()
    for cut in range(len(events) + 1):
        if cut in cuts:
            pending = fs.pending()
            for how, keep in _keep_sets(pending, rng):
                files = fs.crash(keep)
                key = digest(files)
                yield CrashState(cut, frozenset(acked), how, key,
                                 None if key in seen else files)
                seen.add(key)
        if cut < len(events):
            event = events[cut]
            fs.apply(event)
            if event.kind == "ack":
                acked.add(event.name)


# -- examining a state with SQLite ---------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    integrity: tuple[str, ...]   # PRAGMA integrity_check's lines, or the error opening it
    rows: tuple[tuple, ...]      # the test's query

    @property
    def sound(self) -> bool:
        return self.integrity == ("ok",)


def examine(files: dict[str, bytes], database: str, workdir: Path, query: str) -> Verdict:
    """Open a fresh copy of ``files`` (no -shm) with pysqlite3: integrity, then ``query``."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    for name, data in files.items():
        (workdir / name).write_bytes(data)
    connection = dbapi.connect(str(workdir / database), isolation_level=None, timeout=10)
    try:
        connection.execute("PRAGMA synchronous = off")  # a throwaway copy: no fsync
        integrity = tuple(row[0] for row in connection.execute("PRAGMA integrity_check"))
        rows = tuple(connection.execute(query).fetchall()) if integrity == ("ok",) else ()
    except dbapi.DatabaseError as error:
        integrity, rows = (f"{type(error).__name__}: {error}",), ()
    finally:
        connection.close()
    return Verdict(integrity, rows)
