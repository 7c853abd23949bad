"""Storage faults while serving: the database file deleted or replaced under a running server,
a data directory whose database is missing at start, and a full disk (a small tmpfs as the data
directory: these tests run as root, as in CI).

What the server must do (docs/protocol.md):
* database deleted/replaced: every write answers 503 `storage_lost`, reads keep working,
  /readyz answers 503 `storage_lost`, one level=error log line names the path and what to do,
  and the data the server still holds is copied to `<db>.rescued-<time>`;
* a used data directory without its database: `serve` and the admin commands refuse to start
  (no silent empty database); `chatkitd migrate` creates one deliberately;
* full disk: a database write answers 507 `storage_error`, the server keeps serving, and
  `attachments.delete` frees space even though deleting a row needs room too.
"""

import errno
import glob
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import (HTTP_TIMEOUT, RawStream, base_env, chatkitd_bin, expect_error, free_port,
                      msg_input)

LOST_MSG = ("the server's database file was deleted or replaced; nothing can be saved until an "
            "operator restores it")
FULL_BODY = {"error": "the disk is full; nothing was kept", "code": "storage_error"}


def readyz(server):
    return requests.get(f"{server.url}/readyz", timeout=HTTP_TIMEOUT)


def healthz(server):
    return requests.get(f"{server.url}/healthz", timeout=HTTP_TIMEOUT)


def lost_lines(server, since=0):
    return [ln for ln in server.log_tail(since, max_bytes=10 ** 6).splitlines()
            if "level=error" in ln and "the database file was deleted or replaced" in ln]


def wait_for(pred, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def serve_once(data_dir, timeout=15):
    """`chatkitd serve` that is expected to refuse to start → the CompletedProcess."""
    return subprocess.run([chatkitd_bin(), "serve", "--data-dir", str(data_dir), "--listen",
                           f"127.0.0.1:{free_port()}"], env=base_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout)


def assert_refused(cp, db):
    err = cp.stderr.decode(errors="replace")
    assert cp.returncode == 1, f"exit {cp.returncode}: {err}"
    assert f"the database {db} is missing" in err and "chatkitd migrate" in err, err
    assert not db.exists(), "an empty database was created anyway"


# ------------------------------------------------------------------------------------------
# the database file deleted or replaced while serving


def test_database_deleted_while_serving(server_factory):
    s = server_factory()
    t = s.new_tenant()
    c = s.client(t)
    thread_id, _ = c.create_thread("kept before the deletion")
    assert readyz(s).status_code == 200
    db = s.data_dir / "chatkitd.db"
    since = s.log_size()

    db.unlink()

    # readiness reports it (and is where an orchestrator looks)
    r = readyz(s)
    assert r.status_code == 503 and r.json() == {"error": LOST_MSG, "code": "storage_lost"}, r.text
    # every write is refused with the same answer, before any stream starts
    r = c.call("attachments.create", {"name": "a.txt", "size": 3, "mime_type": "text/plain"})
    assert expect_error(r, 503, "storage_lost") == {"error": LOST_MSG, "code": "storage_lost"}
    expect_error(c.call("threads.create", {"input": msg_input("lost")}), 503, "storage_lost")
    expect_error(c.call("threads.update", {"thread_id": thread_id, "title": "x"}), 503,
                 "storage_lost")
    # reads keep working: the data the server holds is still there
    got = c.get_thread(thread_id)
    assert got["items"]["data"][0]["content"][0]["text"] == "kept before the deletion"
    assert healthz(s).status_code == 200  # liveness: restarting would lose that data
    assert s.alive()
    # nothing recreated the file behind the operator's back
    assert not db.exists()

    # logged once at level=error, with the path and the way out
    lines = wait_for(lambda: lost_lines(s, since), "the storage-lost log line")
    assert len(lines) == 1, lines
    assert f'path="{db}"' in lines[0] and "action=" in lines[0], lines[0]
    assert readyz(s).status_code == 503
    assert len(lost_lines(s, since)) == 1

    # the data it held was copied next to the path
    copies = wait_for(lambda: glob.glob(f"{db}.rescued-*"), "the rescued copy")
    assert len(copies) == 1
    with sqlite3.connect(copies[0]) as con:
        assert con.execute("SELECT count(*) FROM threads WHERE id = ?", (thread_id,)).fetchone()[0] == 1
    con.close()

    # a restart does not silently start on an empty database ...
    s.stop()
    assert_refused(serve_once(s.data_dir), db)
    # ... and the rescued copy put back is the whole database: the token and the thread work
    os.rename(copies[0], db)
    s2 = server_factory(data_dir=s.data_dir)
    c2 = s2.client(t)
    assert c2.get_thread(thread_id)["id"] == thread_id
    c2.create_thread("writes work again")
    assert readyz(s2).status_code == 200


def test_database_replaced_while_serving(server_factory, tmp_path):
    s = server_factory()
    t = s.new_tenant()
    c = s.client(t)
    thread_id, _ = c.create_thread("before the swap")
    db = s.data_dir / "chatkitd.db"
    other = tmp_path / "other.db"
    other.write_bytes(b"")  # another file, renamed over the path (a "restore" under a live server)
    os.rename(other, db)

    # noticed by the writer before it writes, without /readyz having looked
    r = c.call("threads.update", {"thread_id": thread_id, "title": "after"})
    expect_error(r, 503, "storage_lost")
    assert db.stat().st_size == 0, "the server wrote into the file that replaced its database"
    r = readyz(s)
    assert r.status_code == 503 and r.json()["code"] == "storage_lost"
    assert c.get_thread(thread_id)["title"] != "after"
    wait_for(lambda: lost_lines(s), "the storage-lost log line")


def test_store_lost_during_a_stream(server_factory):
    """A streamed turn whose answer cannot be stored ends with an error event, not a 200 item."""
    s = server_factory(env={"CHATKIT_DEMO_DELAY_MS": "200"})
    t = s.new_tenant()
    rs = RawStream(s, t, "threads.create", {"input": msg_input("slow")})
    try:
        assert rs.status == 200
        rs.wait_for(lambda ev: any(e["type"] == "thread.item.added" and
                                   e["item"]["type"] == "assistant_message" for e in ev),
                    "the assistant message")
        (s.data_dir / "chatkitd.db").unlink()
        ev = rs.read_all()
    finally:
        rs.close()
    errors = ev.of("error")
    assert errors and errors[-1]["code"] == "custom" and errors[-1]["allow_retry"] is False, errors
    assert "deleted or replaced" in errors[-1]["message"]
    assert not [e for e in ev if e["type"] == "thread.item.done" and
                e["item"]["type"] == "assistant_message"], "an answer that was not stored was sent"


# ------------------------------------------------------------------------------------------
# a missing database at start


def test_missing_database_at_start(server_factory, tmp_path):
    s = server_factory()
    t = s.new_tenant()
    s.stop()
    db = s.data_dir / "chatkitd.db"
    assert (s.data_dir / "secret.key").exists()
    db.unlink()

    assert_refused(serve_once(s.data_dir), db)
    # the admin commands would create it too (`make run` runs `demo` before `serve`)
    for args in (["demo"], ["account", "create", "x"]):
        cp = subprocess.run([chatkitd_bin()] + args + ["--data-dir", str(s.data_dir)],
                            env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, timeout=15)
        assert_refused(cp, db)

    # stored attachments alone show the directory was used (a configured CHATKIT_SECRET_KEY
    # leaves no secret.key)
    (s.data_dir / "secret.key").unlink()
    (s.data_dir / "files" / "atc_0123").write_bytes(b"x")
    assert_refused(serve_once(s.data_dir), db)

    # deliberately: migrate creates an empty database, and the server starts on it
    cp = subprocess.run([chatkitd_bin(), "migrate", "--data-dir", str(s.data_dir)], env=base_env(),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                        timeout=15)
    assert cp.returncode == 0, cp.stderr
    s2 = server_factory(data_dir=s.data_dir)
    expect_error(s2.client(t).call("threads.list", {}), 401, "unauthorized")

    # a fresh directory starts as always
    server_factory(data_dir=tmp_path / "fresh")


# ------------------------------------------------------------------------------------------
# a full disk


@pytest.fixture
def tmpfs(tmp_path):
    """A 6 MiB tmpfs mounted as a data directory; unmounted after the test (its servers are
    stopped first by the test)."""
    d = tmp_path / "small"
    d.mkdir()
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(d)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if cp.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (these tests need root): {cp.stderr.decode()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path):
    """Writes a filler file until the disk is full (to the last page)."""
    with open(path / "filler", "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    assert free_bytes(path) == 0


def test_full_disk(server_factory, tmpfs):
    s = server_factory(data_dir=tmpfs, env={"CHATKIT_ALLOWED_MIME_TYPES": "text/plain",
                                            "CHATKIT_UPLOAD_MAX_BYTES": "1000000"})
    try:
        t = s.new_tenant()
        other = s.new_user(t.account_id, t.agent_id)
        c = s.client(t)
        thread_id, _ = c.create_thread("kept on a full disk")
        data = {i: (b"%d" % i) * 256 * 1024 for i in range(1, 4)}  # 256 KiB each
        att = {i: c.upload(f"f{i}.txt", "text/plain", data[i])["id"] for i in data}
        fill(tmpfs)

        # database writes: 507 with the documented body, nothing kept
        r = c.call("attachments.create", {"name": "n.txt", "size": 3, "mime_type": "text/plain"})
        assert expect_error(r, 507, "storage_error") == FULL_BODY
        r = c.call("threads.create", {"input": msg_input("no room")})
        assert expect_error(r, 507, "storage_error") == FULL_BODY
        r = c.call("threads.update", {"thread_id": thread_id, "title": "no room"})
        assert expect_error(r, 507, "storage_error") == FULL_BODY

        # the server keeps serving: health, reads, downloads
        assert healthz(s).status_code == 200 and readyz(s).status_code == 200
        got = c.get_thread(thread_id)
        assert got["items"]["data"][0]["content"][0]["text"] == "kept on a full disk"
        assert got.get("title") != "no room"
        r = requests.get(f"{s.url}/chatkit/attachments/{att[2]}", headers=c.auth_headers(),
                         timeout=HTTP_TIMEOUT)
        assert r.status_code == 200 and r.content == data[2]

        # another user cannot use the full-disk path to remove someone's bytes
        r = s.client(other).call("attachments.delete", {"attachment_id": att[1]})
        expect_error(r, 404, "not_found")
        assert (tmpfs / "files" / att[1]).exists()

        # deleting an attachment works on the full disk and frees its space
        assert c.ok("attachments.delete", {"attachment_id": att[1]}) == {}
        assert not (tmpfs / "files" / att[1]).exists()
        assert free_bytes(tmpfs) >= 128 * 1024
        r = requests.get(f"{s.url}/chatkit/attachments/{att[1]}", headers=c.auth_headers(),
                         timeout=HTTP_TIMEOUT)
        assert r.status_code == 404

        # with room again, writes work, and nothing earlier was lost
        c.ok("attachments.create", {"name": "n.txt", "size": 3, "mime_type": "text/plain"})
        new_id, _ = c.create_thread("room again")
        assert c.get_thread(new_id)["id"] == new_id
        assert c.get_thread(thread_id)["items"]["data"][0]["content"][0]["text"] == "kept on a full disk"
        for i in (2, 3):
            r = requests.get(f"{s.url}/chatkit/attachments/{att[i]}", headers=c.auth_headers(),
                             timeout=HTTP_TIMEOUT)
            assert r.status_code == 200 and r.content == data[i]
        assert s.alive()
    finally:
        s.stop()
