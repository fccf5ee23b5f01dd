"""One writer per scene store: an OS file lock beside a local store, a lease object beside an S3 store.

Both live at ``<store>.lock`` and name their holder (host, pid, start time, command), so a second run fails
with one line saying who holds the scene, or waits up to ``timeout`` seconds for it.

- local: ``fcntl.flock`` on the lock file. The kernel frees it when the holder dies, so the lock of a killed
  run is taken over at once. The holder removes the file on release; a waiter that locked a file removed
  meanwhile notices (the path no longer names its inode) and tries again on the new one.
- S3: an object created with a conditional write (``If-None-Match: *``), renewed by the holder every
  ``ttl / 4`` seconds with ``If-Match`` on its last ETag. A lease not renewed for ``ttl`` seconds, measured on
  the server's clock (the HEAD response's Date minus the object's Last-Modified), is stale and taken over
  with ``If-Match`` on the stale ETag, so of two runs racing for it exactly one wins. A holder whose renewal
  is refused has lost its lease: :meth:`Lock.check` then raises before it publishes anything. A lease whose
  holder ran where this run runs (same boot and pid namespace) and is gone is taken over at once the same way.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import fsspec
import fsspec.implementations.local

from da3core.store.scene_store import SceneStore, StoreError

log = logging.getLogger(__name__)

LEASE_TTL = 60.0  # seconds an S3 lease stays valid without renewal
_POLL = 0.5  # seconds between attempts while waiting for a held lock


class StoreLockedError(StoreError):
    """Another run holds the scene store."""


def holder_info() -> dict[str, Any]:
    """Who is asking for the lock: host, pid, where that pid means this process, start time (UTC), command line."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_space": _pid_space(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
    }


def _pid_space() -> str | None:
    """This boot's id and pid namespace: two processes share it only if their pids name the same processes
    (hostnames do not tell: containers with host networking share one). None where Linux's /proc is absent."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{f.read().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _gone(holder: dict[str, Any] | None) -> bool:
    """True if ``holder`` ran where this process runs and has ended (a live pid, reused or not, counts as alive)."""
    if not holder or holder.get("pid_space") is None or holder.get("pid_space") != _pid_space():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, TypeError, KeyError):  # alive under another user, or a record we cannot read
        return False
    return False


def describe_holder(holder: dict[str, Any] | None) -> str:
    """A holder record as a short phrase for one-line messages."""
    if not holder:
        return "another run"
    command = " ".join(str(holder.get("command", "")).split())  # one line, whatever the command held
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started_at')} ({command})"


class _FileLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1  # the open lock file while held
        self.made_dir: str | None = None

    def try_acquire(self) -> bool | None:
        """True: acquired; False: another run holds it; None: it changed hands this instant, try again."""
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
            self.made_dir = parent
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed by a holder's release
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:  # released and removed between our open and flock
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder_info()).encode())
        self.fd = fd
        return True

    def holder(self) -> dict[str, Any] | None:
        try:
            with open(self.path) as f:
                return json.loads(f.read())
        except (OSError, ValueError):  # gone, or being written this instant
            return None

    def check(self) -> None:
        return None

    def release(self) -> None:
        try:
            os.unlink(self.path)  # before unlocking, so no one locks a file that is about to vanish
        finally:
            os.close(self.fd)
        if self.made_dir:  # a failed first run leaves no empty output folder behind
            try:
                os.rmdir(self.made_dir)
            except OSError:
                pass


class _S3Lease:
    def __init__(self, fs: Any, path: str, ttl: float) -> None:
        self.fs, self.ttl = fs, ttl
        self.bucket, self.key, _ = fs.split_path(path)
        self.etag = ""  # of the lease object while held
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._info = holder_info()

    def _put(self, **condition: str) -> str:
        body = json.dumps({**self._info, "renewed_at": time.time()}).encode()  # new ETag on every renewal
        out = self.fs.call_s3(
            "put_object", Bucket=self.bucket, Key=self.key, Body=body, Metadata={"ttl": str(self.ttl)}, **condition
        )
        return out["ETag"]

    def try_acquire(self) -> bool | None:
        """True: acquired; False: another run holds it; None: it changed hands this instant, try again."""
        try:
            self.etag = self._put(IfNoneMatch="*")
        except FileExistsError:
            try:
                head = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
            except FileNotFoundError:  # released this instant
                return None
            server_now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
            age = (server_now - head["LastModified"]).total_seconds()
            stale = self.holder()
            gone = _gone(stale)
            if age <= float(head.get("Metadata", {}).get("ttl", LEASE_TTL)) and not gone:
                return False
            try:  # on the ETag seen: if the holder renewed (or another run took over) meanwhile, this fails
                self.etag = self._put(IfMatch=head["ETag"])
            except OSError:  # another run took it over first
                return None
            log.warning(
                "took over the stale lock s3://%s/%s of %s (%s)",
                self.bucket,
                self.key,
                describe_holder(stale),
                "its process has ended" if gone else f"not renewed for {age:.0f}s",
            )
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.key}", daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.etag = self._put(IfMatch=self.etag)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError) or exc.errno == errno.EINVAL:  # deleted or taken over
                    self.lost = f"the lease was taken over by {describe_holder(self.holder())}"
                    return
                log.warning("renewing the lock s3://%s/%s failed (%s); retrying", self.bucket, self.key, exc)

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(f"{self.bucket}/{self.key}"))
        except (OSError, ValueError):
            return None

    def check(self) -> None:
        if self.lost:
            raise StoreLockedError(f"lost the lock s3://{self.bucket}/{self.key}: {self.lost}; nothing was published")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost is None:
            try:
                self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
            except OSError as exc:  # the lease expires by itself; say so rather than fail a finished run
                log.warning("could not remove the lock s3://%s/%s: %s", self.bucket, self.key, exc)


class Lock:
    """A held scene lock; :meth:`check` raises if it was lost (S3 lease taken over while this run stalled)."""

    def __init__(self, impl: _FileLock | _S3Lease) -> None:
        self._impl = impl

    def check(self) -> None:
        """Raise StoreLockedError if this run no longer holds the lock."""
        self._impl.check()


@contextmanager
def store_lock(store: SceneStore, timeout: float = 0.0, ttl: float = LEASE_TTL) -> Iterator[Lock]:
    """Hold ``<store>.lock`` for the block; if another run holds it, wait up to ``timeout`` s, then raise one line."""
    fs, path = fsspec.core.url_to_fs(store.url, **store.storage_options)
    lock_path = f"{path.rstrip('/')}.lock"
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        impl: _FileLock | _S3Lease = _FileLock(lock_path)
    elif "s3" in fs.protocol:
        impl = _S3Lease(fs, lock_path, ttl)
    else:
        raise StoreError(f"cannot lock {store.url}: scene stores are written on local disk or s3:// only")
    deadline = time.monotonic() + max(timeout, 0.0)
    while not (acquired := impl.try_acquire()):
        if acquired is None:
            continue
        if time.monotonic() >= deadline:
            raise StoreLockedError(
                f"{store.url} is being written by {describe_holder(impl.holder())}; wait for that run "
                "to finish, or set storage.lock_timeout=SECONDS to wait for it"
            )
        time.sleep(_POLL)
    try:
        yield Lock(impl)
    finally:
        impl.release()
