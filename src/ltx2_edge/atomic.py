"""All-or-nothing output files: a run either leaves the finished file(s) at their paths or leaves nothing.

A file is written under a hidden temporary name in the target's own directory (so the final ``os.replace`` is a
rename inside one filesystem, hence atomic) and renamed onto the target only when the writing block ends
normally. Any exception — ``KeyboardInterrupt``, ``SystemExit`` and SIGTERM (through ``install_signal_cleanup``)
included — removes the temporary file. A run killed outright (SIGKILL, power loss) cannot clean up; the next run
writing the same output removes what a dead process left (``clean_stale``). ``output_unit`` does the same for
several files that belong together (an MP4 and its report): all of them are renamed into place, or none.

Temporary names are short whatever the target's (``temp_path``: at most ~100 bytes), so a target whose name is at
the filesystem's limit can still be written. ``check_output_path`` refuses, before any work: a missing or
read-only directory, a directory or a device as target, an existing file without ``overwrite``, a name longer
than the filesystem allows, and a target that is one of the run's inputs (by file identity: device and inode).

This module must never write a target directly, never leave a temporary file behind, never replace an existing
file unless the caller passed ``overwrite=True``, and never replace a file the run reads.
"""

from __future__ import annotations

import array
import contextlib
import errno
import hashlib
import os
import re
import secrets
import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from ltx2_edge.errors import EXIT_TERMINATED, OutputError, RequestError

_FIELD = "--output-path"
_HEAD_BYTES = 40  # of the target's name kept in its temporary name (the rest is a hash)
_SUFFIX_BYTES = 16
_TEMP = re.compile(r"^\..*~(?P<tag>[0-9a-f]{10})\.(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>partial|backup)(\.[^/]*)?$",
                   re.DOTALL)  # fmt: skip
_MAX_INPUT_FILES = 10_000  # files looked at under one input folder (a Gemma folder holds ~15)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_UNIT_TARGETS: dict[Path, Path] = {}  # temporary -> target, for every live OutputUnit (errors name the target)
_FS_IOC_GETFLAGS = 0x80086601  # linux/fs.h, as lsattr reads a file's attributes
_IMMUTABLE_FLAGS = 0x10 | 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while ``install_signal_cleanup`` was active.

    A ``KeyboardInterrupt`` subclass so ``except Exception`` blocks do not swallow it, while every
    ``finally``/``except BaseException`` cleanup on the way up still runs. ``exit_code`` is the status a shell
    reports for a process killed by the signal (128 + signal number: 143 for SIGTERM).
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        self.exit_code = 128 + signum if signum != signal.SIGTERM else EXIT_TERMINATED
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")


def name_max(directory: Path) -> int:
    """The longest file name (bytes) ``directory``'s filesystem allows; 255 where it cannot say."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _input_files(inputs: Iterable[Path | str | None]) -> Iterator[Path]:
    for item in inputs:
        if item is None:
            continue
        path = Path(item)
        if path.is_dir():
            for i, inner in enumerate(path.rglob("*")):
                if i >= _MAX_INPUT_FILES:
                    break
                yield inner
        yield path


def input_of(target: Path, inputs: Iterable[Path | str | None]) -> Path | None:
    """The input ``target`` is (same device and inode, or the same resolved path), or None.

    A folder among ``inputs`` stands for every file in it (a Gemma folder's shards, tokenizer and config).
    Hard links and symbolic links to an input count as the input: replacing them would change what it holds.
    """
    target = Path(target)
    ident = _identity(target)
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):
        resolved = target
    for path in _input_files(inputs):
        if ident is not None and _identity(path) == ident:
            return path
        with contextlib.suppress(OSError, RuntimeError):
            if path.resolve() == resolved:
                return path
    return None


def check_output_path(
    target: Path, overwrite: bool, *, inputs: Iterable[Path | str | None] = (), field: str = _FIELD
) -> None:
    """Raise ``RequestError`` (``field``, default ``--output-path``) unless ``target`` can be written as a new (or,
    with ``overwrite``, replaced) regular file that is none of ``inputs`` (files or folders the run reads)."""
    target = Path(target)
    directory = target.parent
    if not target.name or target.name in (".", ".."):
        raise RequestError(field, str(target), "a file name, e.g. out.mp4")
    limit = name_max(directory) if directory.is_dir() else 255
    size = len(os.fsencode(target.name))
    if size > limit:
        raise RequestError(field, str(target), f"a file name of at most {limit} bytes (this one has {size}); "
                           "choose a shorter name")  # fmt: skip
    if not directory.is_dir():
        raise RequestError(field, str(target), f"directory {str(directory)!r} does not exist; create it first")
    if target.is_dir():
        raise RequestError(field, str(target), "it is a directory; name a file such as out.mp4 inside it")
    source = input_of(target, inputs)
    if source is not None:
        same = "" if Path(source) == target else f" ({source})"
        raise RequestError(field, str(target), f"a path that is not one of this run's inputs: it is the input "
                           f"file{same}, which writing would destroy; choose another path")  # fmt: skip
    if target.exists() and not target.is_file():
        raise RequestError(field, str(target), "a regular file or a new name (this is a device, pipe or socket)")
    if target.exists() and not overwrite:
        raise RequestError(field, str(target), f"the file exists; pass --overwrite or choose another {field}")
    if target.exists() and _immutable(target):
        raise RequestError(field, str(target), "a file that can be replaced (this one is immutable or append-only: "
                           "chattr -i it, or choose another path)")  # fmt: skip
    if not os.access(directory, os.W_OK | os.X_OK):
        raise RequestError(field, str(target), f"directory {str(directory)!r} is not writable; choose another")


def _immutable(path: Path) -> bool:
    """Whether Linux marks ``path`` immutable or append-only (``chattr +i``/``+a``): no rename can replace it. False
    where the filesystem or the OS cannot say (the rename then fails at the end, and ``output_failure`` says so)."""
    try:
        import fcntl

        with open(path, "rb") as f:
            flags = array.array("l", [0])
            fcntl.ioctl(f.fileno(), _FS_IOC_GETFLAGS, flags)
    except (OSError, ImportError, OverflowError):
        return False
    return bool(flags[0] & _IMMUTABLE_FLAGS)


def _tag(name: str) -> str:
    return hashlib.sha1(os.fsencode(name)).hexdigest()[:10]


def _cut(text: str, limit: int) -> str:
    # Cut by bytes (what NAME_MAX counts); a split multi-byte character decodes to surrogates, which round-trip.
    return os.fsdecode(os.fsencode(text)[:limit])


def temp_path(target: Path, kind: str = "partial") -> Path:
    """A hidden, unique (per process and call) temporary name beside ``target``, at most ~100 bytes long.

    ``.<first 40 bytes of the name>~<hash of the whole name>.<pid>-<random>.<kind><suffix>``: the hash ties it to
    its target for ``clean_stale``, the pid to its writer, and the suffix keeps tools that guess formats by name
    working. ``kind``: ``partial`` (being written) or ``backup`` (a replaced file's previous content, kept until
    its unit is in place).
    """
    target = Path(target)
    suffix = _cut(target.suffix, _SUFFIX_BYTES) if target.suffix else ""
    head = _cut(target.name, _HEAD_BYTES)
    return target.with_name(f".{head}~{_tag(target.name)}.{os.getpid()}-{secrets.token_hex(4)}.{kind}{suffix}")


def is_temp_path(path: Path) -> bool:
    """Whether ``path`` is one of ``temp_path``'s names (a file another block of this module already owns)."""
    return _TEMP.match(Path(path).name) is not None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or one we cannot ask about: leave its files alone
    return True


def clean_stale(target: Path) -> list[Path]:
    """Remove the temporary files of ``target`` that a process no longer running left (a killed run); return them.

    Only names ``temp_path`` makes for this very target (its hash) are touched, and only when their writer's pid
    is gone, so a run writing the same output right now keeps its file. A backup whose target is missing (a run
    killed inside ``output_unit``'s renames) is put back instead of removed.
    """
    target = Path(target)
    tag = _tag(target.name)
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or match.group("tag") != tag or _alive(int(match.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            if match.group("kind") == "backup" and not target.exists():
                os.replace(entry.path, target)
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def output_failure(exc: OSError, target: Path, field: str = _FIELD) -> OutputError:
    """One line for a write that failed (no space, read-only, immutable target), naming ``target``, not its
    temporary name, and the flag that chooses another place (``field``)."""
    target = _UNIT_TARGETS.get(Path(target), Path(target))  # a unit's temporary: name what the user asked for
    code = exc.errno
    why = exc.strerror or str(exc)
    if code in _NO_SPACE:
        return OutputError(f"no space left on the device holding {Path(target).parent} while writing {target}; "
                           f"nothing was written: free some space or choose another {field}")  # fmt: skip
    if code in (errno.EROFS, errno.EPERM, errno.EACCES):
        return OutputError(f"cannot write {target} ({why}: a read-only filesystem, an immutable or protected "
                           f"file?); nothing was changed: choose another {field}")  # fmt: skip
    return OutputError(f"writing {target} failed ({why}); nothing was written: check the disk or choose another "
                       f"{field}")  # fmt: skip


@contextlib.contextmanager
def atomic_output(
    target: Path, overwrite: bool, *, inputs: Iterable[Path | str | None] = (), field: str = _FIELD
) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` when the block ends normally.

    The target is checked on entry (fail before any work) and again just before the rename, so a file that
    appeared meanwhile is not clobbered without ``overwrite``. On any exception, BaseExceptions included, the
    temporary file is removed; an ``OSError`` (disk full, say) becomes one ``OutputError`` line naming
    ``target``, anything else propagates unchanged. The block must create the file. A ``target`` that is itself
    a temporary name of this module (``output_unit``'s) is yielded as is: its owner renames and cleans it.
    """
    target = Path(target)
    if is_temp_path(target):
        try:
            yield target
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise output_failure(exc, target, field) from exc
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return
    inputs = tuple(inputs)
    check_output_path(target, overwrite, inputs=inputs, field=field)
    clean_stale(target)
    temp = temp_path(target)
    try:
        yield temp
        check_output_path(target, overwrite, inputs=inputs, field=field)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise output_failure(exc, target, field) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _commit(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Rename every temporary onto its target, or (on any failure) put every target back as it was."""
    backups: list[tuple[Path, Path]] = []  # (target, hard link to its previous content)
    done: list[Path] = []
    try:
        for _, target in pairs:
            if target.exists():
                backup = temp_path(target, "backup")
                try:
                    os.link(target, backup)  # the target stays in place; fails for an immutable file
                except OSError:
                    os.rename(target, backup)  # a filesystem without hard links; fails for an immutable file too
                backups.append((target, backup))
        for temp, target in pairs:
            os.replace(temp, target)
            done.append(target)
    except BaseException:
        done_set = set(done)
        for target, backup in backups:  # every previous content back in place (moved aside or replaced)
            if target in done_set or not target.exists():
                with contextlib.suppress(OSError):
                    os.replace(backup, target)
        for target in done:
            if target not in dict(backups):
                target.unlink(missing_ok=True)
        raise
    finally:
        for _, backup in backups:
            backup.unlink(missing_ok=True)


class OutputUnit:
    """Files that only make sense together (an MP4 and its ``.report.json``): written under temporary names, then
    all renamed into place by ``commit``, or all removed by ``discard``; targets are never half replaced.

    Made before any work: every target is checked (``check_output_path``, none of ``inputs``) and the stale
    temporaries of killed runs are removed. ``temps`` are the paths to write (a writer using ``atomic_output``
    writes such a path in place). ``commit`` checks the targets again, requires every temporary, and renames them
    (an existing target is kept as a hard link until all are in place, and put back on failure); an ``OSError``
    there becomes one ``OutputError`` line and nothing is left. For a run split into phases (the MP4 written in
    one, the report in another) hold the unit across them; ``output_unit`` is the one-block form.
    """

    def __init__(
        self, targets: Sequence[Path], overwrite: bool, *, inputs: Iterable[Path | str | None] = (), field: str = _FIELD
    ) -> None:
        self.targets = tuple(Path(t) for t in targets)
        self.overwrite, self.inputs, self.field = overwrite, tuple(inputs), field
        for target in self.targets:
            check_output_path(target, overwrite, inputs=self.inputs, field=field)
        for target in self.targets:
            clean_stale(target)
        self.temps = tuple(temp_path(t) for t in self.targets)
        _UNIT_TARGETS.update(zip(self.temps, self.targets, strict=True))

    def commit(self) -> None:
        """Rename every temporary onto its target (all or none); ``OutputError`` (temporaries removed) if not."""
        try:
            for target, temp in zip(self.targets, self.temps, strict=True):
                check_output_path(target, self.overwrite, inputs=self.inputs, field=self.field)
                if not temp.is_file():
                    raise FileNotFoundError(errno.ENOENT, "the writer did not create it", str(temp))
            _commit(tuple(zip(self.temps, self.targets, strict=True)))
        except OSError as exc:
            failure = self.failure(exc)
            self.discard()
            raise failure from exc
        except BaseException:
            self.discard()
            raise
        self._forget()

    def discard(self) -> None:
        """Remove every temporary (safe to call more than once, and after ``commit``)."""
        for temp in self.temps:
            temp.unlink(missing_ok=True)
        self._forget()

    def _forget(self) -> None:
        for temp in self.temps:
            _UNIT_TARGETS.pop(temp, None)

    def failure(self, exc: OSError) -> OutputError:
        """``output_failure`` for ``exc``, naming the target whose temporary (or itself) failed."""
        named = {p.name: t for t, temp in zip(self.targets, self.temps, strict=True) for p in (t, temp)}
        return output_failure(exc, named.get(Path(str(exc.filename or "")).name, self.targets[0]), self.field)


@contextlib.contextmanager
def output_unit(
    targets: Sequence[Path], overwrite: bool, *, inputs: Iterable[Path | str | None] = (), field: str = _FIELD
) -> Iterator[tuple[Path, ...]]:
    """``OutputUnit`` as a block: yields its temporaries, commits when the block ends normally, else discards.
    An ``OSError`` in the block (disk full while writing either file) becomes one ``OutputError`` line too."""
    unit = OutputUnit(targets, overwrite, inputs=inputs, field=field)
    try:
        yield unit.temps
    except OSError as exc:
        unit.discard()
        if isinstance(exc, OutputError):  # a writer inside already said it, naming the target
            raise
        raise unit.failure(exc) from exc
    except BaseException:
        unit.discard()
        raise
    unit.commit()


@contextlib.contextmanager
def install_signal_cleanup() -> Iterator[bool]:
    """Turn SIGTERM into a ``Terminated`` exception in the main thread while the block runs.

    Without it a killed run dies without unwinding, and ``atomic_output`` cannot remove its temporary file.
    The previous handler is restored on exit. Python delivers signals to the main thread only, so in any other
    thread nothing is installed and the context yields False (True when installed).
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return

    def _raise(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield True
    finally:
        # None means the old handler was installed from C, not Python; the default action is the closest match.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
