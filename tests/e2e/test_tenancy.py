"""Isolation: another account's user and another user of the same account see nothing."""

import pytest

from conftest import Client, expect_error, msg_input


@pytest.fixture
def world(server, client):
    """The owner's thread (one widget turn), a pending tool call thread, and an unused attachment."""
    tid, _ = client.create_thread("owner's secret thread with a widget")
    items = client.all_items(tid)
    att = client.ok("attachments.create", {"name": "secret.pdf", "size": 10, "mime_type": "application/pdf"})
    t = server.new_user(client.tenant.account_id, client.tenant.agent_id)
    same_account = Client(server, t)
    other_account = Client(server, server.new_tenant())
    return {"tid": tid, "items": items, "att": att, "thread": client.get_thread(tid),
            "others": {"same-account user": same_account, "other-account user": other_account}}


@pytest.mark.parametrize("who", ["same-account user", "other-account user"])
def test_others_get_not_found(client, world, who):
    other = world["others"][who]
    tid = world["tid"]
    user, widget, asst = world["items"]
    assert widget["type"] == "widget"
    calls = [
        ("threads.get_by_id", {"thread_id": tid}),
        ("items.list", {"thread_id": tid}),
        ("threads.update", {"thread_id": tid, "title": "pwned"}),
        ("threads.delete", {"thread_id": tid}),
        ("items.feedback", {"thread_id": tid, "item_ids": [asst["id"]], "kind": "negative"}),
        ("attachments.delete", {"attachment_id": world["att"]["id"]}),
        ("threads.add_user_message", {"thread_id": tid, "input": msg_input("hi")}),
        ("threads.retry_after_item", {"thread_id": tid, "item_id": user["id"]}),
        ("threads.custom_action", {"thread_id": tid, "item_id": widget["id"], "action": {"type": "demo.click"}}),
        ("threads.sync_custom_action", {"thread_id": tid, "item_id": widget["id"],
                                        "action": {"type": "demo.sync"}}),
        ("threads.add_client_tool_output", {"thread_id": tid, "result": {}}),
    ]
    for typ, params in calls:
        expect_error(other.call(typ, params), 404, "not_found")

    assert other.list_threads()["data"] == []
    # another user's attachment cannot be attached either
    r = other.call("threads.create", {"input": msg_input("steal", attachments=[world["att"]["id"]])})
    expect_error(r, 404, "not_found")
    assert other.list_threads()["data"] == []

    # the owner's data is intact
    assert client.get_thread(tid) == world["thread"]
    assert client.all_items(tid) == world["items"]
    assert [t["id"] for t in client.list_threads()["data"]] == [tid]
    ev = client.stream("threads.create", {"input": msg_input("mine", attachments=[world["att"]["id"]])})
    assert ev[1]["item"]["attachments"][0]["id"] == world["att"]["id"]


def test_other_account_agent_is_not_usable(client, world):
    other = world["others"]["other-account user"]
    expect_error(other.call("threads.list", {}, agent=client.tenant.agent_id), 422, "agent_required")
    r = other.call("threads.create", {"input": msg_input("hi")}, agent=client.tenant.agent_id)
    expect_error(r, 422, "agent_required")
    assert other.list_threads()["data"] == []
    assert [t["id"] for t in client.list_threads()["data"]] == [world["tid"]]


def test_others_threads_invisible_in_lists(client, world):
    same = world["others"]["same-account user"]
    mine, _ = same.create_thread("the other user's thread")
    assert [t["id"] for t in same.list_threads()["data"]] == [mine]
    assert [t["id"] for t in client.list_threads()["data"]] == [world["tid"]]
    expect_error(client.call("threads.get_by_id", {"thread_id": mine}), 404, "not_found")


def test_foreign_cursors(client, world):
    other = world["others"]["other-account user"]
    expect_error(other.call("threads.list", {"after": world["tid"]}), 400, "invalid_cursor")
    tid, _ = other.create_thread("own thread")
    foreign_item = world["items"][0]["id"]
    expect_error(other.call("items.list", {"thread_id": tid, "after": foreign_item}), 400, "invalid_cursor")
