"""threads.create / add_user_message / get_by_id / list / update / delete, titles, agents."""

import pytest

from conftest import expect_error, msg_input
from shapes import DEMO_REPLY, demo_reply, expect_seq, reply_text, you_said


def test_create_event_order_and_persistence(client):
    tid, ev = client.create_thread("hello there")
    expect_seq(ev, r"thread.created done:user_message stream_options " + DEMO_REPLY + r" thread.updated")
    assert ev.comments == 0, "heartbeats are disabled on this server"

    t = ev[0]["thread"]
    assert "title" not in t
    assert t["status"] == {"type": "active"} and t["metadata"] == {}
    assert t["items"] == {"data": [], "has_more": False}

    user = ev[1]["item"]
    assert user["thread_id"] == tid
    assert user["content"] == [{"type": "input_text", "text": "hello there"}]
    assert user["attachments"] == [] and user["inference_options"] == {}
    assert "quoted_text" not in user
    assert user["created_at"] >= t["created_at"]

    assert ev[2] == {"type": "stream_options", "stream_options": {"allow_cancel": True}}

    a = demo_reply(ev, 3)
    assert reply_text(a).startswith(you_said("hello there")), reply_text(a)

    upd = ev[-1]["thread"]
    assert upd["id"] == tid and upd["title"] == "hello there"
    assert upd["created_at"] == t["created_at"]

    # persisted exactly as streamed
    page = client.items(tid, order="asc")
    assert page["data"] == [user, a] and page["has_more"] is False
    got = client.get_thread(tid)
    assert got["title"] == "hello there" and got["id"] == tid and got["created_at"] == t["created_at"]
    assert got["items"] == {"data": [user, a], "has_more": False}
    assert got["items"]["data"][0]["type"] == "user_message"


def test_add_user_message_second_turn(client):
    tid, ev1 = client.create_thread("first message")
    ev = client.send(tid, "second message")
    # the title was set by the first turn: no thread.updated now
    expect_seq(ev, r"done:user_message stream_options " + DEMO_REPLY)
    user = ev[0]["item"]
    assert user["content"] == [{"type": "input_text", "text": "second message"}]
    a = demo_reply(ev, 2)
    assert reply_text(a).startswith(you_said("second message"))
    items = client.all_items(tid)
    assert [i["type"] for i in items] == ["user_message", "assistant_message"] * 2
    assert items[2:] == [user, a]
    stamps = [i["created_at"] for i in items]
    assert stamps == sorted(stamps), "created_at must never decrease within a thread"
    assert len({i["id"] for i in items}) == 4
    assert client.get_thread(tid)["title"] == "first message"


def test_user_message_fields_round_trip(client):
    content = [
        {"type": "input_text", "text": "look at "},
        {"type": "input_tag", "id": "tag_1", "text": "@doc", "data": {"k": [1, "two"]}, "group": "docs"},
        {"type": "input_tag", "id": "tag_2", "text": "@x", "data": {}, "interactive": True},
    ]
    params = {"input": msg_input("", content=content, quoted_text="quoted words",
                                 inference_options={"model": "gpt-x", "tool_choice": {"id": "search"}})}
    ev = client.stream("threads.create", params, metadata={"trace": "abc"})
    user = ev[1]["item"]
    assert user["type"] == "user_message"
    want = [dict(content[0]), dict(content[1], interactive=False), dict(content[2])]
    assert user["content"] == want
    assert user["quoted_text"] == "quoted words"
    assert user["inference_options"] == {"model": "gpt-x", "tool_choice": {"id": "search"}}
    tid = ev[0]["thread"]["id"]
    assert client.all_items(tid)[0] == user


def test_unknown_keys_and_metadata_are_ignored(client):
    tid, _ = client.create_thread("hi")
    body = {"type": "threads.get_by_id", "params": {"thread_id": tid, "bogus": 1},
            "metadata": {"anything": [1, 2]}, "extra_top_level": True}
    r = client.request(body)
    assert r.status_code == 200 and r.body["id"] == tid


def test_title_is_cut_at_a_word_boundary(client):
    text = "The quick brown fox jumps over the lazy dog and then keeps running far away"
    assert len(text) > 60
    tid, ev = client.create_thread(text)
    title = ev[-1]["thread"]["title"]
    assert 0 < len(title) <= 60, title
    assert text.startswith(title), title
    assert title == title.strip()
    assert text[len(title)] == " ", f"title {title!r} not cut at a word boundary"


def test_update_title(client):
    tid, _ = client.create_thread("original title")
    t = client.ok("threads.update", {"thread_id": tid, "title": "Renamed"})
    assert t["id"] == tid and t["title"] == "Renamed"
    assert t["items"] == {"data": [], "has_more": False}
    assert client.get_thread(tid)["title"] == "Renamed"
    # a later turn neither re-titles nor announces anything
    ev = client.send(tid, "another message")
    assert not ev.of("thread.updated")
    assert client.get_thread(tid)["title"] == "Renamed"
    lst = client.list_threads()
    assert [(x["id"], x.get("title")) for x in lst["data"]] == [(tid, "Renamed")]


def test_delete_thread(client):
    keep, _ = client.create_thread("keep me")
    tid, _ = client.create_thread("delete me")
    assert client.ok("threads.delete", {"thread_id": tid}) == {}
    expect_error(client.call("threads.get_by_id", {"thread_id": tid}), 404, "not_found")
    expect_error(client.call("items.list", {"thread_id": tid}), 404, "not_found")
    r = client.call("threads.add_user_message", {"thread_id": tid, "input": msg_input("hi")})
    expect_error(r, 404, "not_found")
    assert [t["id"] for t in client.list_threads()["data"]] == [keep]


def test_list_threads_newest_first(client):
    ids = [client.create_thread(f"thread number {i}")[0] for i in range(3)]
    page = client.list_threads()
    assert [t["id"] for t in page["data"]] == ids[::-1]
    assert [t["title"] for t in page["data"]] == [f"thread number {i}" for i in (2, 1, 0)]
    assert page["has_more"] is False and "after" not in page
    stamps = [t["created_at"] for t in page["data"]]
    assert stamps == sorted(stamps, reverse=True)


def test_fail_trigger_sends_custom_error(client):
    tid, _ = client.create_thread("hello")
    ev = client.send(tid, "please FAIL this turn")
    expect_seq(ev, r"done:user_message stream_options progress( progress){3} error")  # 3 retries
    err = ev[-1]
    assert err["code"] == "custom" and err["allow_retry"] is True
    assert isinstance(err["message"], str) and err["message"]
    assert not [e for e in ev if e["type"].startswith("thread.item") and e.get("item", {}).get("type")
                == "assistant_message"]
    items = client.all_items(tid)
    assert [i["type"] for i in items] == ["user_message", "assistant_message", "user_message"]


def test_fail_on_first_turn(client):
    ev = client.stream("threads.create", {"input": msg_input("fail right away")})
    # the demo's failure is transient: it is retried (CHATKIT_LLM_RETRIES, default 3), each
    # retry announced, before the error reaches the user
    expect_seq(ev, r"thread.created done:user_message stream_options progress( progress){3} error"
                   r" thread.updated")
    retries = ev.of("progress_update")[1:]
    assert [p["icon"] for p in retries] == ["reload"] * 3
    assert "trying again (3 of 3)" in retries[-1]["text"]
    assert ev.of("error")[0]["allow_retry"] is True
    tid = ev[0]["thread"]["id"]
    assert [i["type"] for i in client.all_items(tid)] == ["user_message"]


# ---- agents ------------------------------------------------------------------------------

def test_agent_id_optional_with_one_agent(client):
    r = client.call("threads.create", {"input": msg_input("no agent given")}, agent=None)
    assert r.status_code == 200, r.content[:300]
    tid = r.events[0]["thread"]["id"]
    page = client.ok("threads.list", {}, agent=None)
    assert [t["id"] for t in page["data"]] == [tid]
    assert [t["id"] for t in client.list_threads()["data"]] == [tid]


def test_agent_required(server, make_client):
    acct = server.new_account()
    ag1 = server.new_agent(acct, "one")
    ag2 = server.new_agent(acct, "two")
    c = make_client(server.new_user(acct, ag1))
    other = make_client()  # another account with its own agent

    for agent in (None, "agt_" + "0" * 24, "nonsense", other.tenant.agent_id):
        r = c.call("threads.create", {"input": msg_input("hi")}, agent=agent)
        expect_error(r, 422, "agent_required")
        expect_error(c.call("threads.list", {}, agent=agent), 422, "agent_required")
    assert c.ok("threads.list", {})["data"] == []  # nothing was created

    tid1 = c.create_thread("with agent one")[0]
    r = c.call("threads.create", {"input": msg_input("with agent two")}, agent=ag2)
    assert r.status_code == 200
    assert tid1 in [t["id"] for t in c.ok("threads.list", {}, agent=ag1)["data"]]


def test_list_order_is_by_creation(client):
    ids = [client.create_thread(f"thread {i}")[0] for i in range(3)]
    client.send(ids[0], "activity on the oldest thread")
    client.ok("threads.update", {"thread_id": ids[0], "title": "renamed oldest"})
    assert [t["id"] for t in client.list_threads()["data"]] == ids[::-1]
    assert [t["id"] for t in client.list_threads(order="asc")["data"]] == ids
