"""Where a rollout's output lives, and the lease that makes one run its only writer.

:class:`Store` is an output folder on any ``pyarrow.fs`` filesystem: a local
folder, or a URI that pyarrow or fsspec knows (``s3://bucket/prefix``,
``gs://…``, ``hdfs://…``, ``file://…``, see :func:`resolve_output`). The publishing
protocol of :mod:`rollout.dataset` needs only what every such filesystem
offers: write a new file, move a finished file to a new name (the new name
appears whole or not at all: a rename locally, a server-side copy on object
stores), list a folder, delete a file. It needs no atomic replace of an
existing name and no lock.

:class:`OutputLease` makes one run the owner of an output folder, with the
same operations. A run writes a claim ``_lease/claim-<id>.json`` (host, pid,
start time), then lists the claims: if another live claim is there it
withdraws its own and is refused (two runs starting at once both withdraw and
try again after a random pause). The owner rewrites its claim every
``renew_s`` seconds. A claim is dead when its process is gone (same host:
checked at once by pid and process start time, so a SIGKILLed run never
blocks the next ``--resume``) or when it was not renewed for ``ttl_s``
seconds (another host). An owner whose claim was taken away (it stalled for
longer than ``ttl_s``) notices on its next commit and stops.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = ["Store", "OutputLease", "is_uri", "resolve_output"]

LEASE_DIR = "_lease"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: str | os.PathLike) -> bool:
    """Whether ``location`` names a filesystem by scheme (``s3://…``) rather than a local path."""
    return isinstance(location, str) and bool(_URI.match(location))


def resolve_output(location: str) -> tuple[pafs.FileSystem, str]:
    """The ``pyarrow.fs`` filesystem and the path in it that an output URI names.

    pyarrow's own filesystems first (``s3://``, ``gs://``, ``hdfs://``,
    ``file://``; S3 reads the usual ``AWS_*`` variables, including
    ``AWS_ENDPOINT_URL`` for an S3-compatible server), then any scheme an
    installed fsspec implementation registers (wrapped for pyarrow). Raises
    ``ValueError`` saying what to install or fix when neither knows it.
    """
    try:
        filesystem, path = pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as arrow_error:
        try:
            import fsspec.core

            fs, path = fsspec.core.url_to_fs(location)
        except ImportError as exc:  # the scheme's fsspec package is not installed
            raise ValueError(
                f"--out {location}: pyarrow cannot open it ({arrow_error}) and fsspec needs a package for it "
                f"({exc}); install that package or write to a local folder"
            ) from None
        except ValueError as exc:
            raise ValueError(
                f"--out {location}: neither pyarrow ({arrow_error}) nor fsspec ({exc}) knows this filesystem; "
                "use a local folder or a URI such as s3://bucket/prefix, gs://bucket/prefix, hdfs://host/path"
            ) from None
        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    if not path.strip("/"):
        raise ValueError(f"--out {location} names no folder; add one, e.g. {location.rstrip('/')}/runs/my-run")
    return filesystem, path.rstrip("/")


class Store:
    """A folder on a pyarrow filesystem; paths are relative to it, with ``/``.

    ``root`` is a local folder, or a URI (see :func:`resolve_output`) when
    ``filesystem`` is not given; ``location`` is how to name it to a user.
    """

    def __init__(self, root: str | os.PathLike, filesystem: pafs.FileSystem | None = None):
        self.location = str(root)
        if filesystem is None and is_uri(root):
            filesystem, root = resolve_output(str(root))
        elif filesystem is None:
            filesystem, root = pafs.LocalFileSystem(), str(Path(root).absolute())
        self.fs = filesystem
        self.root = str(root).rstrip("/")
        self.local = isinstance(filesystem, pafs.LocalFileSystem)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def mkdir(self, rel: str) -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def entries(self, rel: str, dirs: bool = False) -> list[pafs.FileInfo]:
        """Files (or folders) directly in ``rel``; none when it does not exist."""
        selector = pafs.FileSelector(self.path(rel), allow_not_found=True)
        wanted = pafs.FileType.Directory if dirs else pafs.FileType.File
        return sorted((i for i in self.fs.get_file_info(selector) if i.type == wanted), key=lambda i: i.base_name)

    def open_output(self, rel: str):
        folder = rel.rpartition("/")[0]
        if folder and self.local:  # object stores have no folders to make
            self.mkdir(folder)
        return self.fs.open_output_stream(self.path(rel))

    def finish_output(self, stream, rel: str) -> None:
        """Close a stream from :meth:`open_output`; on a local disk also fsync, so a power loss keeps it."""
        stream.close()
        if self.local:
            fd = os.open(self.path(rel), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def put(self, rel: str, data: bytes) -> None:
        """Write a whole small file: under a hidden name, then moved to ``rel`` (seen whole or not at all)."""
        folder, _, name = rel.rpartition("/")
        temp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp" if folder else f".{name}.tmp"
        stream = self.open_output(temp)
        stream.write(data)
        self.finish_output(stream, temp)
        self.move(temp, rel)

    def get(self, rel: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self.path(rel)) as stream:
                return stream.read()
        except (FileNotFoundError, OSError):
            return None

    def move(self, src: str, dst: str) -> None:
        self.fs.move(self.path(src), self.path(dst))
        if self.local:
            _fsync_dir(Path(self.path(dst)).parent)

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_started(pid: int) -> float | None:
    """The start time of a live process, None when there is none with that pid."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class OutputLease:
    """One run's ownership of an output folder (see the module docstring).

    ``acquire()`` raises ``ValueError`` naming the holder when another live
    run owns the folder; ``check()`` raises when the lease was lost;
    ``release()`` gives it back. Also a context manager.
    """

    def __init__(self, store: Store, ttl_s: float = 60.0, renew_s: float = 5.0):
        self.store = store
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.claim_id = uuid.uuid4().hex[:12]
        self.rel = f"{LEASE_DIR}/claim-{self.claim_id}.json"
        self.held = False
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        pid = os.getpid()
        self.claim = {
            "host": socket.gethostname(),
            "pid": pid,
            "pid_started": _process_started(pid),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def acquire(self, attempts: int = 6) -> OutputLease:
        for attempt in range(attempts):
            self.store.put(self.rel, json.dumps(self.claim).encode())
            others = self._live_others()
            if not others:
                self.held = True
                self._thread = threading.Thread(target=self._renew, name="taugym-lease", daemon=True)
                self._thread.start()
                return self
            self.store.delete(self.rel)
            if any(time.time() - o.pop("_mtime", 0) > 2 for o in others):
                break  # an established owner, not a run starting this very moment
            if attempt < attempts - 1:  # maybe a run starting this very moment: both back off
                time.sleep(random.uniform(0.05, 0.4))
        holder = others[0]
        raise ValueError(
            f"another run is writing to {self.store.location} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('since')}); wait for it to finish (or stop it, then --resume), or choose another --out"
        )

    def check(self) -> None:
        """Raise if another run took the output over (this one stalled for longer than ``ttl_s``)."""
        if self.lost or (self.held and not self.store.exists(self.rel)):
            self.lost = True
            raise RuntimeError(
                f"this run lost its lease on {self.store.location} to another run; nothing more is published"
            )

    def release(self) -> None:
        self._stop.set()
        if self.held and not self.lost:
            self.store.delete(self.rel)
        self.held = False

    def __enter__(self) -> OutputLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            if not self.store.exists(self.rel):
                self.lost = True
                return
            try:
                self.store.put(self.rel, json.dumps(self.claim).encode())
            except OSError:
                pass  # a transient store error: the next renewal tries again

    def _live_others(self) -> list[dict]:
        live = []
        for info in self.store.entries(LEASE_DIR):
            name = info.base_name
            rel = f"{LEASE_DIR}/{name}"
            if name.startswith("."):  # a put that never finished
                if info.mtime is not None and time.time() - info.mtime.timestamp() > self.ttl_s:
                    self.store.delete(rel)
                continue
            if not name.startswith("claim-") or rel == self.rel:
                continue
            if self._alive(rel, info):
                try:
                    claim = json.loads(self.store.get(rel) or b"{}")
                except ValueError:
                    claim = {}
                live.append({**claim, "_mtime": info.mtime.timestamp() if info.mtime is not None else time.time()})
            else:
                self.store.delete(rel)  # its holder is gone
        return live

    def _alive(self, rel: str, info: pafs.FileInfo) -> bool:
        try:
            claim = json.loads(self.store.get(rel) or b"")
        except ValueError:
            claim = {}
        if claim.get("host") == socket.gethostname() and isinstance(claim.get("pid"), int):
            started = _process_started(claim["pid"])
            return started is not None and (claim.get("pid_started") is None or abs(started - claim["pid_started"]) < 1)
        age = time.time() - info.mtime.timestamp() if info.mtime is not None else 0.0
        return age < self.ttl_s
