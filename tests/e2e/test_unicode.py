"""Unicode round trips: raw UTF-8 on the wire (never \\u escapes for non-ASCII)."""

import json

import shapes
from conftest import msg_input
from shapes import DEMO_REPLY, demo_reply, expect_seq, reply_text, you_said

EMOJI = "👋🏽"
CJK = "世界你好"
RTL = "مرحبا بالعالم"
HEB = "שלום"
TEXT = f"Grüße {EMOJI} {CJK} — {RTL} {HEB} ✓"
CONTROL = "tab\there\nnew line \x01\x1f\x7f end \u2028 \ufeff"


def test_message_and_title_round_trip(client):
    assert len(TEXT) < 60
    tid, ev = client.create_thread(TEXT)
    raw = ev.raw
    for s in (TEXT, EMOJI, CJK, RTL, HEB):
        assert s.encode("utf-8") in raw, f"{s!r} not raw UTF-8 in the SSE bytes"
    assert b"\\ud83d" not in raw.lower()
    assert ev[1]["item"]["content"][0]["text"] == TEXT
    a = demo_reply(ev, 3)
    assert reply_text(a).startswith(you_said(TEXT))
    title = ev[-1]["thread"]["title"]
    assert title.encode("utf-8") in raw and TEXT.startswith(title)

    r = client.call("items.list", {"thread_id": tid, "order": "asc"})
    assert TEXT.encode("utf-8") in r.content
    shapes.check_compact_json(r.content.decode("utf-8"))
    assert r.body["data"][0]["content"][0]["text"] == TEXT
    r = client.call("threads.get_by_id", {"thread_id": tid})
    assert r.body["title"] == title and title.encode("utf-8") in r.content
    r = client.call("threads.list", {})
    assert r.body["data"][0]["title"] == title and title.encode("utf-8") in r.content


def test_title_limit_counts_characters(client):
    """The automatic title is the text cut to <= 60 characters (not bytes): a 34-character
    message (70 UTF-8 bytes) is its own title."""
    assert len(TEXT) <= 60 < len(TEXT.encode("utf-8"))
    tid, ev = client.create_thread(TEXT)
    assert ev[-1]["thread"]["title"] == TEXT
    assert client.get_thread(tid)["title"] == TEXT


def test_control_characters_round_trip(client):
    tid, _ = client.create_thread("hello")
    ev = client.send(tid, CONTROL)
    expect_seq(ev, r"done:user_message stream_options " + DEMO_REPLY)
    assert ev[0]["item"]["content"][0]["text"] == CONTROL
    assert b"\\t" in ev.raw and b"\\n" in ev.raw  # escaped, so each event stays one line
    assert "\u2028".encode() in ev.raw and "\ufeff".encode() in ev.raw
    assert client.all_items(tid)[2]["content"][0]["text"] == CONTROL
    assert reply_text(demo_reply(ev, 2)).startswith(you_said(CONTROL))


def test_title_update_round_trip(client):
    tid, _ = client.create_thread("hello")
    title = f"📚 読書 notes — قراءة {HEB}\tz"
    r = client.call("threads.update", {"thread_id": tid, "title": title})
    assert r.body["title"] == title and title.split("\t")[0].encode() in r.content
    assert client.get_thread(tid)["title"] == title


def test_escaped_input_is_decoded(client):
    """Clients may send \\u escapes (JSON.stringify does for lone control chars); the server
    decodes them and answers with raw UTF-8."""
    body = json.dumps({"type": "threads.create", "params": {"input": msg_input(TEXT)}}, ensure_ascii=True)
    assert "\\u" in body
    r = client.post_raw(body)
    from conftest import check_response
    check_response(r, "threads.create", {})
    assert r.events[1]["item"]["content"][0]["text"] == TEXT
    assert TEXT.encode() in r.content


def test_multibyte_echo_cut_stays_valid(client):
    text = "a" + "é" * 150  # the demo echoes the first 200 bytes: the cut falls inside a character
    tid, ev = client.create_thread(text)  # parse_sse decodes strictly: invalid UTF-8 fails
    rt = reply_text(demo_reply(ev, 3))
    assert rt.startswith('You said: "a' + "é" * 99), rt[:60]
    title = ev[-1]["thread"]["title"]
    assert 0 < len(title) <= 60 and text.startswith(title.rstrip("…").rstrip())


def test_large_message(client):
    text = ("lorem ipsum " * 20000)[:200000]
    tid, ev = client.create_thread(text)
    assert ev[1]["item"]["content"][0]["text"] == text
    assert client.all_items(tid)[0]["content"][0]["text"] == text
    assert reply_text(demo_reply(ev, 3)).startswith(you_said(text))
