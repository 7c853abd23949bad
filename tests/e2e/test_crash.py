"""Crashes: `kill -9` of the server in the middle of an upload and at random points of a
concurrent workload, and clients that vanish in the middle of an upload.

What the server guarantees (docs/security.md, "Files"; src/chatkit/uploads.c):
* an upload whose writer is gone leaves nothing behind and its attachment uploadable: at once
  when the client goes away (the claim is released), at the next start when the server itself
  died (every claim left running is released and every temporary file removed before the
  first request);
* whatever a client saw complete (a streamed turn to its end, a 200 upload, a delete) is there
  after a crash: events go out only once their writes are durable.

The workload test is seeded: the seed is printed (shown on failure); rerun one with
CHATKIT_CRASH_SEED=<seed>. Timing is never asserted, only outcomes.
"""

import hashlib
import os
import random
import re
import shutil
import signal
import sqlite3
import threading
import time
import traceback
from pathlib import Path

import pytest
import requests

from conftest import HTTP_TIMEOUT, Client, RawConn, build_request, check_response, expect_error, msg_input, wait_until

ENV = {"CHATKIT_ALLOWED_MIME_TYPES": "text/plain", "CHATKIT_DEMO_DELAY_MS": "15"}
MB = 1024 * 1024
# the server needs a moment to notice a closed connection; generous for a loaded machine
RELEASE_WAIT_S = 20.0

_LETTERS = bytes(ord("a") + b % 26 for b in range(256))


def text_bytes(seed, n):
    """n deterministic bytes of lowercase ASCII (a valid text/plain file)."""
    return random.Random(seed).randbytes(n).translate(_LETTERS)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def part_files(data_dir):
    d = Path(data_dir) / "files" / "tmp"
    return sorted(p for p in d.iterdir() if p.name.endswith(".part")) if d.is_dir() else []


def part_bytes(data_dir):
    total = 0
    for p in part_files(data_dir):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def trickle(data, piece=64 * 1024, pause=0.01):
    """A body sent piece by piece (chunked), as a slow client does."""
    for i in range(0, len(data), piece):
        yield data[i:i + piece]
        time.sleep(pause)


def put(server, tenant, att_id, data, slow=False):
    h = {"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/octet-stream"}
    r = requests.put(f"{server.url}/chatkit/upload/{att_id}", data=trickle(data) if slow else data,
                     headers=h, timeout=HTTP_TIMEOUT)
    if r.status_code >= 400:
        check_response(r, None, None)
    return r


def download(server, tenant, att_id):
    return requests.get(f"{server.url}/chatkit/attachments/{att_id}",
                        headers={"Authorization": f"Bearer {tenant.token}"}, timeout=HTTP_TIMEOUT)


def put_head(tenant, att_id, length, expect=False):
    h = {"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/octet-stream",
         "Content-Length": str(length)}
    if expect:
        h["Expect"] = "100-continue"
    return build_request("PUT", f"/chatkit/upload/{att_id}", b"", h)


def create_att(client, name, size):
    return client.ok("attachments.create", {"name": name, "size": size, "mime_type": "text/plain"})["id"]


def put_when_released(server, tenant, att_id, data):
    """PUT, again while the server has not yet noticed that the previous upload's client left
    (409 upload_in_progress); → the first other reply."""
    deadline = time.monotonic() + RELEASE_WAIT_S
    while True:
        r = put(server, tenant, att_id, data)
        if r.status_code == 409 and r.body.get("code") == "upload_in_progress" and time.monotonic() < deadline:
            time.sleep(0.05)
            continue
        return r


def db_integrity(db_path, copy_dir=None):
    """PRAGMA integrity_check of the database; with copy_dir, of a copy of its files (the
    crash image, left untouched for the server's own recovery)."""
    db_path = Path(db_path)
    if copy_dir is not None:
        copy_dir = Path(copy_dir)
        copy_dir.mkdir(parents=True)
        for suffix in ("", "-wal"):
            src = Path(str(db_path) + suffix)
            if src.exists():
                shutil.copy2(src, copy_dir / (db_path.name + suffix))
        db_path = copy_dir / db_path.name
    con = sqlite3.connect(db_path)
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


def kill9(server):
    assert server.alive(), "the server died before it was killed"
    rc = server.stop(sig=signal.SIGKILL)
    assert rc == -signal.SIGKILL, f"exit {rc}"


# ------------------------------------------------------------------------------------------
# one upload


def test_kill9_mid_upload_then_retry_at_once(server_factory):
    srv = server_factory(env=ENV)
    t = srv.new_tenant()
    data = text_bytes("kill9-upload", 8 * MB)
    att = create_att(Client(srv, t), "big.txt", len(data))
    c = RawConn(srv.port)
    try:
        c.send(put_head(t, att, len(data), expect=True))
        assert c.read_head()[0] == 100  # the attachment is claimed for this upload
        c.send(data[:MB])
        wait_until(lambda: part_bytes(srv.data_dir) >= MB, 30, "the first MB in the temporary file")
        kill9(srv)
    finally:
        c.close()
    assert len(part_files(srv.data_dir)) == 1, "the crash should leave the temporary file behind"

    srv2 = server_factory(env=ENV, data_dir=srv.data_dir)
    # the same attachment uploads at once: no 409 upload_in_progress for the dead server's claim
    r = put(srv2, t, att, data)
    assert r.status_code == 200, f"retry after the restart → {r.status_code} {r.content[:300]!r}"
    assert r.json()["id"] == att
    got = download(srv2, t, att)
    assert got.status_code == 200 and sha(got.content) == sha(data)
    # start-up removed the dead upload's temporary file (and the retry left none)
    assert part_files(srv2.data_dir) == []
    log = srv2.log_tail(max_bytes=10 ** 6)
    assert re.search(r"interrupted uploads recovered.*uploads=1 part_files=1", log), log[-2000:]
    # a second restart finds nothing to recover
    srv2.stop()
    srv3 = server_factory(env=ENV, data_dir=srv.data_dir)
    wait_until(lambda: re.search(r"interrupted uploads recovered.*uploads=0 part_files=0",
                                 srv3.log_tail(max_bytes=10 ** 6)), 30, "the recovery log line")
    expect_error(put(srv3, t, att, data), 409, "already_uploaded")


def test_files_without_a_row_are_removed_at_start(server_factory):
    """Regression: bytes whose row is gone (a direct upload killed between storing its file and
    recording it, a removal that failed) stayed in files/ for good. Start-up removes attachment
    files that have no row, and keeps those that do."""
    srv = server_factory(env=ENV)
    t = srv.new_tenant()
    c = Client(srv, t)
    data = text_bytes("kept", 1000)
    att = create_att(c, "kept.txt", len(data))
    assert put(srv, t, att, data).status_code == 200
    srv.stop()
    orphan = srv.data_dir / "files" / "atc_0000000000000000000000000000000000"
    orphan.write_bytes(b"left behind")
    srv2 = server_factory(env=ENV, data_dir=srv.data_dir)
    wait_until(lambda: re.search(r"interrupted uploads recovered.*orphan_files=1",
                                 srv2.log_tail(max_bytes=10 ** 6)), 30, "the recovery log line")
    assert not orphan.exists()
    got = download(srv2, t, att)
    assert got.status_code == 200 and got.content == data


@pytest.mark.parametrize("when", ["waiting", "writing", "committing"])
def test_client_gone_mid_upload_then_retry(server_factory, when):
    """The upload's own client goes away: while the server waits for more bytes, while it writes
    a piece (a large body sent at once), or right after the last byte (the server is then
    fsyncing / renaming). The attachment is never left claimed: the retry succeeds, or (when
    the bytes were all in and got stored) is told already_uploaded, and no temporary file is
    left."""
    srv = server_factory(env=ENV)
    t = srv.new_tenant()
    data = text_bytes("gone-" + when, 8 * MB)
    att = create_att(Client(srv, t), "big.txt", len(data))
    c = RawConn(srv.port)
    try:
        c.send(put_head(t, att, len(data), expect=True))
        assert c.read_head()[0] == 100
        if when == "waiting":
            c.send(data[:MB])
            wait_until(lambda: part_bytes(srv.data_dir) >= MB, 30, "the first MB in the temporary file")
        elif when == "writing":
            c.send(data[:5 * MB])
        else:
            c.send(data)
    finally:
        c.close()
    r = put_when_released(srv, t, att, data)
    if when == "committing" and r.status_code == 409:
        expect_error(r, 409, "already_uploaded")
    else:
        assert r.status_code == 200, f"retry → {r.status_code} {r.content[:300]!r}"
    got = download(srv, t, att)
    assert got.status_code == 200 and sha(got.content) == sha(data)
    wait_until(lambda: not part_files(srv.data_dir), 30, "no temporary file left")
    assert srv.alive()


# ------------------------------------------------------------------------------------------
# kill -9 under a concurrent workload

WORDS = ["apple", "river", "stone", "cloud", "green", "seven", "quiet", "lamp", "paper", "north",
         "violet", "engine", "maple", "orbit"]  # none of the demo model's trigger words
UPLOAD_SIZES = [1000, 40_000, 300_000, 1_500_000]
ROUNDS = 8
WORKERS = 4


class Model:
    """What one client saw complete, across rounds."""

    def __init__(self, idx, tenant):
        self.idx = idx
        self.tenant = tenant
        self.threads = {}  # id -> {"turns": [(user text, assistant text)], "state": live|deleted|maybe}
        self.atts = {}     # id -> {"seed", "size", "sha", "state": uploaded|interrupted|deleted|maybe}
        self.n = 0
        self.retried = 0  # interrupted uploads retried after a restart
        self.stored = 0   # of which the crashed server had stored (409 already_uploaded)

    def live(self, what, state):
        return [k for k, v in getattr(self, what).items() if v["state"] == state]


def item_text(item):
    return "".join(c.get("text", "") for c in item.get("content", []))


def streamed_turn(client, req_type, params, user_text):
    """A streaming request that must run to its end → (thread id or None, assistant text)."""
    r = client.call(req_type, params)
    assert r.status_code == 200 and r.events is not None, f"{req_type} → {r.status_code} {r.content[:300]!r}"
    ev = r.events
    assert not ev.of("error"), f"{req_type}: error event {ev.of('error')!r}"
    users = [e["item"] for e in ev.of("thread.item.done") if e["item"]["type"] == "user_message"]
    assert [item_text(u) for u in users] == [user_text], users
    done = [e["item"] for e in ev.of("thread.item.done") if e["item"]["type"] == "assistant_message"]
    assert done, f"{req_type}: no assistant message done: {ev.types()}"
    created = ev.of("thread.created")
    return (created[0]["thread"]["id"] if created else None), item_text(done[-1])


def workload(model, server, rng, tag):
    """Runs operations until the server dies (the exception that ends it is the caller's)."""
    cl = Client(server, model.tenant)
    while True:
        live_threads = model.live("threads", "live")
        uploaded = model.live("atts", "uploaded")
        ops = ["create", "upload"] + (["send", "send", "delete_thread"] if live_threads else []) + \
              (["delete_att"] if uploaded else [])
        op = rng.choice(ops)
        model.n += 1
        if op in ("create", "send"):
            text = f"{' '.join(rng.sample(WORDS, 3))} {tag}-c{model.idx}-n{model.n}"
            if rng.random() < 0.5:
                text += " slow"  # a streamed answer spread over ~20 x CHATKIT_DEMO_DELAY_MS
            if op == "create":
                tid, answer = streamed_turn(cl, "threads.create", {"input": msg_input(text)}, text)
                model.threads[tid] = {"turns": [(text, answer)], "state": "live"}
            else:
                tid = rng.choice(live_threads)
                _, answer = streamed_turn(cl, "threads.add_user_message",
                                          {"thread_id": tid, "input": msg_input(text)}, text)
                model.threads[tid]["turns"].append((text, answer))
        elif op == "upload":
            seed, size = f"{tag}-c{model.idx}-n{model.n}", rng.choice(UPLOAD_SIZES)
            data = text_bytes(seed, size)
            att = create_att(cl, f"f{model.n}.txt", size)
            model.atts[att] = {"seed": seed, "size": size, "sha": sha(data), "state": "interrupted"}
            r = put(server, model.tenant, att, data, slow=rng.random() < 0.5)
            assert r.status_code == 200, f"upload → {r.status_code} {r.content[:300]!r}"
            model.atts[att]["state"] = "uploaded"
        elif op == "delete_att":
            att = rng.choice(uploaded)
            model.atts[att]["state"] = "maybe"
            assert cl.ok("attachments.delete", {"attachment_id": att}) == {}
            model.atts[att]["state"] = "deleted"
        else:
            tid = rng.choice(live_threads)
            model.threads[tid]["state"] = "maybe"
            assert cl.ok("threads.delete", {"thread_id": tid}) == {}
            model.threads[tid]["state"] = "deleted"


def verify(model, server):
    """After a restart: everything the client saw complete is there; interrupted uploads can
    be retried and succeed."""
    cl = Client(server, model.tenant)
    for tid, th in model.threads.items():
        if th["state"] == "maybe":
            continue
        if th["state"] == "deleted":
            expect_error(cl.call("threads.get_by_id", {"thread_id": tid}), 404, "not_found")
            continue
        cl.get_thread(tid)
        items = cl.all_items(tid)
        for user, answer in th["turns"]:
            at = [i for i, it in enumerate(items) if it["type"] == "user_message" and item_text(it) == user]
            assert len(at) == 1, f"thread {tid}: user message {user!r} found {len(at)} times"
            nxt = [it for it in items[at[0] + 1:] if it["type"] in ("user_message", "assistant_message")]
            assert nxt and nxt[0]["type"] == "assistant_message", (
                f"thread {tid}: no assistant message after {user!r}: {[it['type'] for it in items]}")
            assert item_text(nxt[0]) == answer, f"thread {tid}: the answer to {user!r} differs"
    for att, a in model.atts.items():
        if a["state"] == "maybe":
            continue
        if a["state"] == "deleted":
            assert download(server, model.tenant, att).status_code == 404
            continue
        if a["state"] == "interrupted":
            r = put(server, model.tenant, att, text_bytes(a["seed"], a["size"]))
            model.retried += 1
            if r.status_code != 200:  # stored before the crash, the reply lost
                expect_error(r, 409, "already_uploaded")
                model.stored += 1
            a["state"] = "uploaded"
        got = download(server, model.tenant, att)
        assert got.status_code == 200 and sha(got.content) == a["sha"], (
            f"attachment {att}: {got.status_code}, {len(got.content)} of {a['size']} bytes")


def test_kill9_under_load(server_factory, tmp_path):
    seed = int(os.environ.get("CHATKIT_CRASH_SEED") or random.randrange(1 << 32))
    print(f"test_kill9_under_load seed {seed} (rerun: CHATKIT_CRASH_SEED={seed})")
    rng = random.Random(seed)
    srv = server_factory(env=ENV)
    db = Path(srv.data_dir) / "chatkitd.db"
    models = [Model(i, srv.new_tenant()) for i in range(WORKERS)]
    for rnd in range(ROUNDS):
        killed = threading.Event()
        errors = []

        def run(m, wrng, tag, server=srv):
            try:
                workload(m, server, wrng, tag)
            except Exception:  # noqa: BLE001 - any failure before the kill is the test's
                if not killed.is_set():
                    errors.append(f"client {m.idx}: {traceback.format_exc()}")

        workers = [threading.Thread(target=run, args=(m, random.Random(f"{seed}-{rnd}-{m.idx}"), f"r{rnd}"),
                                    daemon=True) for m in models]
        for w in workers:
            w.start()
        delay = rng.uniform(0.3, 2.5)
        time.sleep(delay)
        assert not errors, f"seed {seed} round {rnd}: {errors[0]}"
        killed.set()  # before the kill: any failure from now on is the kill's
        kill9(srv)
        for w in workers:
            w.join(timeout=60)
            assert not w.is_alive(), f"seed {seed} round {rnd}: a client hangs after the kill"
        assert not errors, f"seed {seed} round {rnd}: {errors[0]}"

        check = db_integrity(db, tmp_path / f"crash{rnd}")
        assert check == [("ok",)], f"seed {seed} round {rnd} (kill after {delay:.2f}s): {check[:5]}"

        srv = server_factory(env=ENV, data_dir=srv.data_dir)
        assert part_files(srv.data_dir) == [], "temporary upload files survived the restart"
        for m in models:
            verify(m, srv)
        assert part_files(srv.data_dir) == []

    # still serving normally
    m = Model(WORKERS, srv.new_tenant())
    cl = Client(srv, m.tenant)
    tid, answer = streamed_turn(cl, "threads.create", {"input": msg_input("after the crashes")},
                                "after the crashes")
    assert answer
    att = create_att(cl, "last.txt", 1000)
    assert put(srv, m.tenant, att, b"x" * 1000).status_code == 200
    for mm in models:
        seen = sum(len(th["turns"]) for th in mm.threads.values() if th["state"] == "live")
        print(f"client {mm.idx}: {len(mm.threads)} threads ({seen} turns seen in live ones), "
              f"{len(mm.atts)} attachments ({mm.retried} interrupted uploads retried, {mm.stored} "
              f"of them stored before the crash)")
    assert srv.stop() == 0
    assert db_integrity(db) == [("ok",)]
