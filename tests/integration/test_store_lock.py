"""The one-writer-per-scene lock against a second real process (``tests/store_scripts/hold_lock.py``), on local
disk (flock) and on S3 (a lease object on the moto server): the second writer fails at once with one line naming
the holder or waits up to its timeout; the lock of a killed holder is taken over; a frozen S3 holder loses it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from paths import REPO_ROOT

from da3core.store import SceneStore, StoreLockedError, store_lock

pytestmark = pytest.mark.slow  # servers, subprocesses and kills: seconds each

SCRIPT = REPO_ROOT / "tests" / "store_scripts" / "hold_lock.py"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> SceneStore:
    """A scene store location that nobody holds yet."""
    if request.param == "local":
        return SceneStore(str(tmp_path / "room" / "scene.zarr"))
    return SceneStore(f"s3://da3-test/locks/{uuid.uuid4().hex[:8]}/scene.zarr", request.getfixturevalue("s3_options"))


class Holder:
    """``hold_lock.py`` in its own process, holding ``store``'s lock."""

    def __init__(self, store: SceneStore, ttl: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), store.url, json.dumps(store.storage_options), str(ttl)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        assert self.proc.stdout.readline().strip() == "held"

    def say(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return "" if line == "release" else self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def locked_out(store: SceneStore, timeout: float = 0.0) -> str:
    """The one-line error of a lock attempt that must fail."""
    with pytest.raises(StoreLockedError) as info:
        with store_lock(store, timeout=timeout):
            pass
    return str(info.value)


def test_second_writer_fails_at_once_naming_the_holder_or_waits(store):
    holder = Holder(store)
    try:
        started = time.monotonic()
        message = locked_out(store)
        assert time.monotonic() - started < 5
        assert "\n" not in message and message.startswith(f"{store.url} is being written by")
        assert f"pid {holder.proc.pid} on {socket.gethostname()}" in message and "hold_lock.py" in message
        assert "storage.lock_timeout=SECONDS" in message
        assert "pid" in locked_out(store, timeout=1.0)  # waits its second, then gives up
        threading.Timer(1.5, holder.say, ("release",)).start()
        started = time.monotonic()
        with store_lock(store, timeout=60):
            assert time.monotonic() - started > 1.0
        assert holder.proc.wait(30) == 0
    finally:
        holder.close()
    with store_lock(store):  # released: free again, and no lock left behind
        pass
    fs, path = store._fs()
    assert not fs.exists(f"{path}.lock")


def test_lock_of_a_killed_holder_is_taken_over_at_once(store):
    holder = Holder(store)  # an S3 lease valid for 60 s: it is the ended process that frees it, not the ttl
    holder.proc.send_signal(signal.SIGKILL)
    holder.close()
    started = time.monotonic()
    with store_lock(store):
        fs, path = store._fs()
        assert json.loads(fs.cat_file(f"{path}.lock"))["pid"] == os.getpid()
    assert time.monotonic() - started < 5


def test_s3_lease_of_a_holder_elsewhere_waits_for_its_ttl(s3_options):
    """A pid from another machine or container says nothing here: its lease is taken over only once stale."""
    store = SceneStore(f"s3://da3-test/locks/{uuid.uuid4().hex[:8]}/scene.zarr", s3_options)
    holder = Holder(store, ttl=2.0)
    fs, path = store._fs()
    record = json.loads(fs.cat_file(f"{path}.lock"))
    holder.say("release")
    holder.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    elsewhere = {**record, "pid": int(dead.stdout), "pid_space": "another-boot/pid:[1]"}  # gone, were it here
    fs.call_s3(
        "put_object",
        Bucket=path.split("/")[0],
        Key=f"{path.split('/', 1)[1]}.lock",
        Body=json.dumps(elsewhere).encode(),
        Metadata={"ttl": "2.0"},
    )
    assert f"pid {elsewhere['pid']}" in locked_out(store)
    time.sleep(3)
    with store_lock(store, timeout=5):  # stale now: taken over
        assert json.loads(fs.cat_file(f"{path}.lock"))["pid"] == os.getpid()


def test_frozen_s3_holder_loses_its_lease_and_publishes_nothing(s3_options):
    store = SceneStore(f"s3://da3-test/locks/{uuid.uuid4().hex[:8]}/scene.zarr", s3_options)
    holder = Holder(store, ttl=2.0)
    try:
        assert holder.say("check") == "ok"
        holder.proc.send_signal(signal.SIGSTOP)  # as a stalled machine: no renewals
        time.sleep(4)
        with store_lock(store, timeout=5):  # stale: taken over
            holder.proc.send_signal(signal.SIGCONT)
            time.sleep(1.5)  # its renewal is refused now
            answer = holder.say("check")
            assert answer.startswith("lost: lost the lock") and f"pid {os.getpid()}" in answer, answer
        holder.say("release")
        assert holder.proc.wait(30) == 0
    finally:
        holder.close()
