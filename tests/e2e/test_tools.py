"""Client tool calls (add_client_tool_output) and structured input (add_structured_input)."""

import copy

import pytest

from conftest import expect_error
from shapes import DEMO_REPLY, demo_reply, expect_seq, reply_text


def tool_call_thread(client):
    tid, _ = client.create_thread("hello")
    ev = client.send(tid, "Please use the CLIENT TOOL now")
    expect_seq(ev, r"done:user_message stream_options (progress )?done:client_tool_call")
    tc = ev[-1]["item"]
    assert tc["status"] == "pending" and tc["name"] == "get_selection" and tc["arguments"] == {}
    assert tc["call_id"] and "output" not in tc
    return tid, tc


def test_client_tool_round_trip(client):
    tid, tc = tool_call_thread(client)
    items = client.all_items(tid)
    assert items[-1] == tc
    assert [i["type"] for i in items] == ["user_message", "assistant_message", "user_message", "client_tool_call"]

    result = {"nodes": [1, 2], "text": "selected text", "nested": {"ok": True}}
    ev = client.stream("threads.add_client_tool_output", {"thread_id": tid, "result": result})
    # the completed tool call is not re-sent
    expect_seq(ev, r"stream_options " + DEMO_REPLY)
    a = demo_reply(ev, 1)
    assert reply_text(a).startswith("Thanks, I received: "), reply_text(a)

    items = client.all_items(tid)
    done = dict(tc, status="completed", output=result)
    assert items[3] == done, items[3]
    assert items[4] == a
    assert len(items) == 5

    expect_error(client.call("threads.add_client_tool_output", {"thread_id": tid, "result": result}),
                 400, "no_pending_tool_call")
    assert client.all_items(tid) == items


@pytest.mark.parametrize("result", ["plain string", 42, [1, "two"], None, {}])
def test_client_tool_output_any_json(client, result):
    tid, tc = tool_call_thread(client)
    ev = client.stream("threads.add_client_tool_output", {"thread_id": tid, "result": result})
    expect_seq(ev, r"stream_options " + DEMO_REPLY)
    stored = client.all_items(tid)[3]
    assert stored["id"] == tc["id"] and stored["status"] == "completed"
    if result is None:
        assert "output" not in stored  # nulls are omitted
    else:
        assert stored["output"] == result


def test_client_tool_output_requires_newest_pending(client):
    tid, tc = tool_call_thread(client)
    # a new user turn makes the pending call no longer the newest item
    client.send(tid, "never mind")
    expect_error(client.call("threads.add_client_tool_output", {"thread_id": tid, "result": 1}),
                 400, "no_pending_tool_call")


# ---- structured input --------------------------------------------------------------------

def choose_thread(client):
    tid, _ = client.create_thread("hello")
    ev = client.send(tid, "Help me choose a colour")
    expect_seq(ev, r"done:user_message stream_options (progress )?done:structured_input")
    si = ev[-1]["item"]
    assert si["status"] == "pending"
    by_id = {q["id"]: q for q in si["inputs"]}
    assert [q["id"] for q in si["inputs"]] == ["color", "note"]
    color, note = by_id["color"], by_id["note"]
    assert color["type"] == "multiple_choice" and color["multiple"] is False
    assert color["options"] == [{"value": "red"}, {"value": "green"}, {"value": "blue"}]
    assert note["type"] == "freeform"
    assert client.all_items(tid)[-1] == si
    return tid, si


def answered(si, status, answers):
    want = copy.deepcopy(si)
    want["status"] = status
    for q in want["inputs"]:
        q["answer"] = answers[q["id"]]
    return want


SKIP = {"values": [], "skipped": True}


def submit(client, tid, si, submission):
    ev = client.stream("threads.add_structured_input",
                       {"thread_id": tid, "item_id": si["id"], "input": submission})
    expect_seq(ev, r"stream_options replaced:structured_input " + DEMO_REPLY)
    demo_reply(ev, 2)
    return ev


def test_structured_input_answered(client):
    tid, si = choose_thread(client)
    ev = submit(client, tid, si, {"status": "answered", "answers": {
        "color": {"values": ["green", "blue"]},   # single choice → first value only
        "note": {"values": ["by Friday"]},
        "bogus": {"values": ["ignored"]},         # unknown id → ignored
    }})
    want = answered(si, "answered", {"color": {"values": ["green"], "skipped": False},
                                     "note": {"values": ["by Friday"], "skipped": False}})
    assert ev[1]["item"] == want
    items = client.all_items(tid)
    assert items[3] == want and items[4]["type"] == "assistant_message" and len(items) == 5

    r = client.call("threads.add_structured_input",
                    {"thread_id": tid, "item_id": si["id"], "input": {"answers": {"note": {"values": ["x"]}}}})
    expect_error(r, 400, "not_pending")
    assert client.all_items(tid) == items


def test_structured_input_skipped(client):
    tid, si = choose_thread(client)
    ev = submit(client, tid, si, {"status": "skipped", "answers": {"color": {"values": ["red"]}}})
    want = answered(si, "skipped", {"color": SKIP, "note": SKIP})
    assert ev[1]["item"] == want
    assert client.all_items(tid)[3] == want


def test_structured_input_missing_and_empty_answers(client):
    tid, si = choose_thread(client)
    ev = submit(client, tid, si, {"answers": {"color": {"values": []}}})  # status defaults to answered
    want = answered(si, "answered", {"color": SKIP, "note": SKIP})
    assert ev[1]["item"] == want
    assert client.all_items(tid)[3] == want


def test_structured_input_answer_marked_skipped(client):
    tid, si = choose_thread(client)
    ev = submit(client, tid, si, {"status": "answered", "answers": {
        "color": {"values": ["red"], "skipped": True}, "note": {"values": ["a", "b"]}}})
    want = answered(si, "answered", {"color": SKIP, "note": {"values": ["a", "b"], "skipped": False}})
    assert ev[1]["item"] == want


def test_structured_input_empty_submission(client):
    tid, si = choose_thread(client)
    ev = submit(client, tid, si, {})
    assert ev[1]["item"] == answered(si, "answered", {"color": SKIP, "note": SKIP})


def test_structured_input_wrong_item(client):
    tid, si = choose_thread(client)
    user = client.all_items(tid)[2]
    expect_error(client.call("threads.add_structured_input",
                             {"thread_id": tid, "item_id": user["id"], "input": {}}), 400, "not_pending")
    expect_error(client.call("threads.add_structured_input",
                             {"thread_id": tid, "item_id": si["id"], "input": {"status": "later"}}),
                 400, "invalid_request")
    assert client.all_items(tid)[-1] == si
