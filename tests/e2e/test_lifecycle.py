"""Graceful shutdown, persistence across restarts, concurrent streams."""

import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import json

from conftest import RawConn, RawStream, build_request, msg_input
from shapes import DEMO_REPLY, demo_reply, expect_seq, reply_text, token, you_said


def refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except (ConnectionRefusedError, socket.timeout, OSError):
        return True
    s.close()
    return False


def await_refused(port, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if refused(port):
            return True
        time.sleep(0.05)
    return False


def reader(rs, out):
    try:
        out["events"] = rs.read_all()
    except Exception as e:  # noqa: BLE001 - reported by the test
        out["error"] = e


def test_graceful_shutdown_lets_streams_finish(server_factory):
    s = server_factory(env={"CHATKIT_DEMO_DELAY_MS": "200", "CHATKIT_SHUTDOWN_TIMEOUT_MS": "10000"})
    c = s.client(s.new_tenant())
    tid, _ = c.create_thread("hello")
    rs = RawStream(s, c.tenant, "threads.add_user_message", {"thread_id": tid, "input": msg_input("slow one")})
    try:
        rs.wait_for(lambda e: any(token(x) == "delta" for x in e), "a text delta")
        s.proc.send_signal(signal.SIGTERM)
        out = {}
        t = threading.Thread(target=reader, args=(rs, out), daemon=True)
        t.start()
        assert await_refused(s.port), "new connections still accepted after SIGTERM"
        assert t.is_alive(), "the listener must close while the stream is still running"
        t.join(15)
        assert not t.is_alive(), "stream did not finish"
        assert "error" not in out, f"stream broken during graceful shutdown: {out.get('error')!r}"
        expect_seq(out["events"], r"done:user_message stream_options " + DEMO_REPLY)
        assert reply_text(demo_reply(out["events"], 2)).startswith(you_said("slow one"))
    finally:
        rs.close()
    assert s.wait_exit(10) == 0, f"exit code {s.proc.returncode}"

    # what was streamed was stored
    s2 = server_factory(data_dir=s.data_dir)
    c2 = s2.client(c.tenant)
    items = c2.all_items(tid)
    assert [i["type"] for i in items] == ["user_message", "assistant_message"] * 2
    assert items[3] == out["events"][-1]["item"]


def test_shutdown_deadline_cuts_streams(server_factory):
    s = server_factory(env={"CHATKIT_DEMO_DELAY_MS": "200", "CHATKIT_SHUTDOWN_TIMEOUT_MS": "300"})
    c = s.client(s.new_tenant())
    tid, _ = c.create_thread("hello")
    rs = RawStream(s, c.tenant, "threads.add_user_message", {"thread_id": tid, "input": msg_input("slow one")})
    try:
        rs.wait_for(lambda e: any(token(x) == "delta" for x in e), "a text delta")
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        # the stream (about 4 s long) is cut: the body ends or the connection drops
        cut = False
        try:
            while rs._pump():
                pass
            cut = True
        except (EOFError, ConnectionResetError, OSError):
            cut = True
        assert cut
        assert time.monotonic() - t0 < 3.0, "stream not cut near the shutdown deadline"
        assert not any(token(e) == "done:assistant_message" for e in rs.events), "stream was not cut"
    finally:
        rs.close()
    assert s.wait_exit(10) == 0, f"exit code {s.proc.returncode}"


def test_sigterm_idle_server_exits_zero(server_factory):
    s = server_factory()
    t0 = time.monotonic()
    assert s.stop() == 0
    assert time.monotonic() - t0 < 3.0


def test_persistence_across_restart(server_factory):
    s1 = server_factory()
    c1 = s1.client(s1.new_tenant())
    tid, _ = c1.create_thread("remember me")
    c1.send(tid, "second turn")
    c1.ok("threads.update", {"thread_id": tid, "title": "Renamed 😀"})
    other, _ = c1.create_thread("another thread")
    att = c1.ok("attachments.create", {"name": "a.txt", "size": 3, "mime_type": "text/plain"})
    thread = c1.get_thread(tid)
    items = c1.all_items(tid)
    threads = c1.list_threads()
    assert s1.stop() == 0

    s2 = server_factory(data_dir=s1.data_dir)
    c2 = s2.client(c1.tenant)  # same token, same agent
    assert c2.get_thread(tid) == thread
    assert c2.all_items(tid) == items
    assert c2.list_threads() == threads
    # a two-phase upload spans the restart: created before, bytes sent after
    assert c2.put_bytes(att["id"], b"abc").status_code == 200
    ev = c2.send(tid, "after restart", attachments=[att["id"]])
    expect_seq(ev, r"done:user_message stream_options " + DEMO_REPLY)
    assert ev[0]["item"]["attachments"][0]["id"] == att["id"]
    stamps = [i["created_at"] for i in c2.all_items(tid)]
    assert stamps == sorted(stamps)
    assert c2.ok("attachments.delete", {"attachment_id": att["id"]}) == {}
    assert c2.ok("threads.delete", {"thread_id": other}) == {}


def test_concurrent_streams(server, client):
    n = 20

    def one(i):
        c = client.clone()
        text = f"concurrent slow stream {i}"
        tid, ev = c.create_thread(text)
        expect_seq(ev, r"thread.created done:user_message stream_options " + DEMO_REPLY + r" thread.updated")
        a = demo_reply(ev, 3)
        assert reply_text(a).startswith(you_said(text))
        assert ev[-1]["thread"]["title"] == text
        assert c.all_items(tid) == [ev[1]["item"], a]
        return tid

    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        tids = list(pool.map(one, range(n)))
    elapsed = time.monotonic() - t0
    assert len(set(tids)) == n
    listed = client.list_threads(limit=50)["data"]
    assert sorted(t["id"] for t in listed) == sorted(tids)
    # each slow stream takes ~2 s; serialised they would take ~40 s
    assert elapsed < 20, f"20 concurrent slow streams took {elapsed:.1f}s"


LOGFMT_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_.\-]*)=("(?:[^"\\]|\\.)*"|[^\s"=]*)(?:\s+|$)')


def parse_logfmt(line):
    pos, out = 0, {}
    while pos < len(line):
        m = LOGFMT_PAIR.match(line, pos)
        assert m, f"not logfmt at offset {pos}: {line!r}"
        out[m.group(1)] = m.group(2)
        pos = m.end()
    return out


def test_logs_are_logfmt_without_secrets(server_factory):
    secret_key = "sk-LOG-SECRET-0123456789"
    s = server_factory(env={"CHATKIT_LOG_LEVEL": "debug", "OPENAI_API_KEY": secret_key})
    t = s.new_tenant()
    c = s.client(t)
    tid, _ = c.create_thread("hello")
    c.send(tid, "please fail")  # an error with quotes in its message
    bogus = "ckt_BOGUS-SECRET-abcdefghijklmnop"
    c.call("threads.list", {}, token=bogus)
    c.call("threads.list", {"limit": "x"})
    s.cli("token", "revoke", t.token, want_json=False)
    c.call("threads.list", {})
    assert s.stop() == 0
    log = s.log_path.read_text("utf-8")
    for secret in (t.token, bogus, secret_key):
        assert secret not in log, f"secret {secret[:8]}… written to the log"
    lines = [ln for ln in log.splitlines() if ln.strip()]
    assert lines
    for ln in lines:
        kv = parse_logfmt(ln)
        assert {"ts", "level", "msg"} <= set(kv), ln


def test_sigterm_with_idle_keep_alive_connections(server_factory):
    s = server_factory(env={"CHATKIT_SHUTDOWN_TIMEOUT_MS": "10000"})
    conns = []
    try:
        for _ in range(5):
            c = RawConn(s.port)
            c.send(build_request("GET", "/healthz"))
            assert c.read_response()[0] == 200
            conns.append(c)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert s.wait_exit(10) == 0, f"exit code {s.proc.returncode}"
        assert time.monotonic() - t0 < 2.0, "idle keep-alive connections delayed the shutdown"
        for c in conns:
            assert c.wait_closed(1.0)
    finally:
        for c in conns:
            c.close()


def test_disconnect_storm(server, client):
    """Clients that send a streaming request and vanish at once (some with RST) leave the
    server healthy and every thread consistent."""
    import struct
    body = json.dumps({"type": "threads.create",
                       "params": {"input": msg_input("hello and goodbye")}}).encode()
    req = build_request("POST", f"/chatkit?agent_id={client.tenant.agent_id}", body,
                        {"Authorization": f"Bearer {client.tenant.token}", "Content-Type": "application/json"})
    for i in range(30):
        c = RawConn(server.port)
        c.send(req)
        if i % 2:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    # the server still answers, and every thread it kept is whole
    ev = client.create_thread("still alive")[1]
    expect_seq(ev, r"thread.created done:user_message stream_options " + DEMO_REPLY + r" thread.updated")

    def settled():
        page = client.list_threads(limit=100)
        return page if all(client.get_thread(t["id"]).get("title") for t in page["data"]) else None

    page = poll_until(settled, 3.0) or client.list_threads(limit=100)
    for t in page["data"]:
        items = client.all_items(t["id"])
        assert items and items[0]["type"] == "user_message"
        assert {i["type"] for i in items} <= {"user_message", "assistant_message"}
        assert len([i for i in items if i["type"] == "user_message"]) == 1


def poll_until(fn, timeout):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)
