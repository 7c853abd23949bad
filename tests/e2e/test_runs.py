"""retry_after_item, cancellation (client drops the stream), one run per thread, heartbeats."""

import time

from conftest import RawStream, expect_error, msg_input
from shapes import DEMO_REPLY, demo_reply, expect_seq, reply_text, token, you_said


def n_deltas(events):
    return sum(1 for e in events if token(e) == "delta")


def streamed_text(events):
    return "".join(e["update"]["delta"] for e in events if token(e) == "delta")


def poll(fn, timeout=5.0, interval=0.02, what="condition"):
    """Await a server-side effect that has no event of its own (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---- retry_after_item ----------------------------------------------------------------------

def test_retry_single_turn(client):
    tid, _ = client.create_thread("hello retry")
    user, old = client.all_items(tid)
    ev = client.stream("threads.retry_after_item", {"thread_id": tid, "item_id": user["id"]})
    # deleted items are not announced; no user message; title already set
    expect_seq(ev, r"stream_options " + DEMO_REPLY)
    a = demo_reply(ev, 1)
    assert a["id"] != old["id"]
    assert reply_text(a).startswith(you_said("hello retry"))
    assert a["created_at"] >= user["created_at"]
    assert client.all_items(tid) == [user, a]
    assert client.get_thread(tid)["title"] == "hello retry"


def test_retry_second_of_two_turns(client):
    tid, _ = client.create_thread("first turn")
    client.send(tid, "second turn")
    u1, a1, u2, a2 = client.all_items(tid)
    ev = client.stream("threads.retry_after_item", {"thread_id": tid, "item_id": u2["id"]})
    expect_seq(ev, r"stream_options " + DEMO_REPLY)
    new = demo_reply(ev, 1)
    assert reply_text(new).startswith(you_said("second turn"))
    assert client.all_items(tid) == [u1, a1, u2, new]


def test_retry_first_of_two_turns_drops_later_items(client):
    tid, _ = client.create_thread("first turn")
    client.send(tid, "second turn")
    u1, a1, u2, a2 = client.all_items(tid)
    ev = client.stream("threads.retry_after_item", {"thread_id": tid, "item_id": u1["id"]})
    new = demo_reply(ev, 1)
    assert reply_text(new).startswith(you_said("first turn"))
    assert client.all_items(tid) == [u1, new]


def test_retry_errors(client):
    tid, _ = client.create_thread("hello")
    u, a = client.all_items(tid)
    expect_error(client.call("threads.retry_after_item", {"thread_id": tid, "item_id": a["id"]}),
                 400, "not_user_message")
    expect_error(client.call("threads.retry_after_item", {"thread_id": tid, "item_id": "msg_" + "0" * 24}),
                 404, "not_found")
    assert client.all_items(tid) == [u, a]


# ---- cancel --------------------------------------------------------------------------------

def test_cancel_mid_stream(server, client):
    tid, _ = client.create_thread("hello")
    rs = RawStream(server, client.tenant, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("please be slow")})
    try:
        assert rs.status == 200
        evs = rs.wait_for(lambda e: n_deltas(e) >= 2, "two text deltas")
        got = streamed_text(evs)
        assert got
    finally:
        rs.close()  # the stop button: the client drops the connection

    def partial_stored():
        items = client.all_items(tid)
        return items if len(items) == 4 else None

    items = poll(partial_stored, what="the partial assistant message to be stored")
    u0, a0, u, partial = items
    assert u["content"] == [{"type": "input_text", "text": "please be slow"}]
    assert partial["type"] == "assistant_message"
    text = reply_text(partial)
    assert text.startswith(got), (text, got)
    # the hidden "cancelled" note is stored but never visible
    assert client.get_thread(tid)["items"]["data"] == items
    assert client.items(tid)["data"] == items[::-1]

    # the run is over: retrying the cancelled message streams the complete reply
    ev = retry_when_idle(client, {"thread_id": tid, "item_id": u["id"]})
    expect_seq(ev, r"stream_options " + DEMO_REPLY)
    full = reply_text(demo_reply(ev, 1))
    assert full.startswith(text) and len(full) > len(text), "the cancelled message was not partial"
    assert client.all_items(tid)[:3] == [u0, a0, u] and len(client.all_items(tid)) == 4

    # and a normal next turn works
    ev = client.send(tid, "are you there")
    expect_seq(ev, r"done:user_message stream_options " + DEMO_REPLY)


def walk(client, tid, order, limit):
    out, after = [], None
    for _ in range(50):
        p = {"thread_id": tid, "order": order, "limit": limit}
        if after:
            p["after"] = after
        page = client.items(tid, **{k: v for k, v in p.items() if k != "thread_id"})
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["after"]
    raise AssertionError("pagination does not terminate")


def test_pagination_skips_hidden_cancel_note(server, client):
    tid, _ = client.create_thread("hello")
    rs = RawStream(server, client.tenant, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("slow please")})
    try:
        rs.wait_for(lambda e: n_deltas(e) >= 1, "a text delta")
    finally:
        rs.close()
    poll(lambda: len(client.all_items(tid)) == 4, what="the partial assistant message")
    deadline = time.monotonic() + 3
    while True:  # the hidden note sits between the partial message and this turn
        ev = client.send(tid, "next question")
        if ev[0]["type"] != "error" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    visible = client.all_items(tid)
    assert len(visible) == 6
    for limit in (1, 2, 3):
        assert walk(client, tid, "asc", limit) == visible
        assert walk(client, tid, "desc", limit) == visible[::-1]
    assert client.get_thread(tid)["items"]["data"] == visible


def retry_when_idle(client, params, timeout=3.0):
    """retry_after_item; tolerate the brief window in which the cancelled run is finishing."""
    deadline = time.monotonic() + timeout
    while True:
        ev = client.stream("threads.retry_after_item", params)
        busy = len(ev) == 1 and ev[0]["type"] == "error"
        if not busy or time.monotonic() > deadline:
            return ev
        time.sleep(0.05)


def test_cancel_then_new_message(server, client):
    tid, _ = client.create_thread("hello")
    rs = RawStream(server, client.tenant, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("slow please")})
    try:
        rs.wait_for(lambda e: n_deltas(e) >= 1, "a text delta")
    finally:
        rs.close()
    poll(lambda: len(client.all_items(tid)) == 4, what="the partial assistant message")
    deadline = time.monotonic() + 3
    while True:
        ev = client.send(tid, "next question")
        if ev[0]["type"] != "error" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    expect_seq(ev, r"done:user_message stream_options " + DEMO_REPLY)
    types = [i["type"] for i in client.all_items(tid)]
    assert types == ["user_message", "assistant_message"] * 3


# ---- one run per thread ----------------------------------------------------------------------

def test_one_run_per_thread(server, client):
    tid, _ = client.create_thread("hello")
    other, _ = client.create_thread("another thread")
    rs = RawStream(server, client.tenant, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("be slow")})
    try:
        rs.wait_for(lambda e: n_deltas(e) >= 1, "a text delta")
        # a message is stored, not answered: [user message, stream_options, error (retry)]
        ev = client.stream("threads.add_user_message",
                           {"thread_id": tid, "input": msg_input("interrupting")})
        expect_seq(ev, r"done:user_message stream_options error")
        assert ev[0]["item"]["content"][0]["text"] == "interrupting"
        e = ev[-1]
        assert e["code"] == "custom" and e["allow_retry"] is True and "saved" in e["message"], e
        # requests that carry no new user content are refused with a lone error
        ev = client.stream("threads.retry_after_item",
                           {"thread_id": tid, "item_id": client.all_items(tid)[0]["id"]})
        assert len(ev) == 1, f"expected a single error event, got {[e['type'] for e in ev]}"
        e = ev[0]
        assert e["type"] == "error" and e["code"] == "custom" and e["allow_retry"] is False, e
        # other threads are not blocked
        expect_seq(client.send(other, "meanwhile"), r"done:user_message stream_options " + DEMO_REPLY)
        final = rs.read_all()
    finally:
        rs.close()
    expect_seq(final, r"done:user_message stream_options " + DEMO_REPLY)
    texts = [i["content"][0]["text"] for i in client.all_items(tid) if i["type"] == "user_message"]
    assert texts == ["hello", "be slow", "interrupting"], "the message sent while busy is kept"
    # the run is over: the thread accepts a new turn
    expect_seq(client.send(tid, "now"), r"done:user_message stream_options " + DEMO_REPLY)


# ---- heartbeats ----------------------------------------------------------------------------

def test_heartbeats(server_factory):
    s = server_factory(env={"CHATKIT_SSE_HEARTBEAT_MS": "100", "CHATKIT_DEMO_DELAY_MS": "150"})
    c = s.client(s.new_tenant())
    tid, ev = c.create_thread("slow hello")
    expect_seq(ev, r"thread.created done:user_message stream_options " + DEMO_REPLY + r" thread.updated")
    assert ev.comments >= 3, f"expected ': ping' comments during a ~3 s stream, got {ev.comments}"
    assert b": ping\n" in ev.raw
    # a fast reply works the same with heartbeats on
    ev = c.send(tid, "quick one")
    expect_seq(ev, r"done:user_message stream_options " + DEMO_REPLY)
