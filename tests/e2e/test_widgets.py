"""Demo widget: custom_action (streaming) and sync_custom_action (JSON)."""

from conftest import RawStream, expect_error, msg_input
from shapes import DEMO_REPLY, demo_reply, expect_seq, find_actions, find_component


def count_text(widget_item):
    comp = find_component(widget_item["widget"], "count")
    assert comp is not None and comp["type"] == "Text", f"no Text with id 'count' in {widget_item['widget']!r:.300}"
    return comp["value"]


def widget_thread(client):
    tid, ev = client.create_thread("Show me a WIDGET please")
    expect_seq(ev, r"thread.created done:user_message stream_options (progress )?done:widget (progress )?"
                   r"added:assistant_message part.added( delta)+ part.done done:assistant_message thread.updated")
    demo_reply(ev)
    w = ev.of("thread.item.done")[1]["item"]
    assert w["type"] == "widget" and w["widget"]["type"] == "Card"
    assert count_text(w) == "Clicked 0 times"
    assert w["copy_text"] == "Demo widget: clicked 0 times"
    actions = {a["type"]: a for a in find_actions(w["widget"])}
    assert actions["demo.click"] == {"type": "demo.click", "payload": {"n": 0}, "handler": "server",
                                     "loadingBehavior": "auto", "streaming": True}
    assert actions["demo.sync"]["streaming"] is False and actions["demo.sync"]["handler"] == "server"
    items = client.all_items(tid)
    assert [i["type"] for i in items] == ["user_message", "widget", "assistant_message"]
    assert items[1] == w
    return tid, w


def stored_widget(client, tid, wid):
    ws = [i for i in client.all_items(tid) if i["id"] == wid]
    assert len(ws) == 1
    return ws[0]


def test_custom_action_click(client):
    tid, w = widget_thread(client)
    ev = client.stream("threads.custom_action", {"thread_id": tid, "item_id": w["id"],
                                                 "action": {"type": "demo.click", "payload": {"n": 0}}})
    expect_seq(ev, r"stream_options widget.root.updated " + DEMO_REPLY)
    upd = ev[1]
    assert upd["item_id"] == w["id"]
    new_root = upd["update"]["widget"]
    assert find_component(new_root, "count")["value"] == "Clicked 1 time"
    demo_reply(ev, 2)

    s = stored_widget(client, tid, w["id"])
    assert s["widget"] == new_root
    assert s["created_at"] == w["created_at"]
    items = client.all_items(tid)
    # no user message is created by an action
    assert [i["type"] for i in items] == ["user_message", "widget", "assistant_message", "assistant_message"]

    ev = client.stream("threads.custom_action", {"thread_id": tid, "item_id": w["id"],
                                                 "action": {"type": "demo.click", "payload": {"n": 1}}})
    assert find_component(ev[1]["update"]["widget"], "count")["value"] == "Clicked 2 times"
    assert count_text(stored_widget(client, tid, w["id"])) == "Clicked 2 times"


def test_custom_action_on_non_widget(client):
    tid, w = widget_thread(client)
    before = client.all_items(tid)
    for item in (before[0], before[2]):
        ev = client.stream("threads.custom_action", {"thread_id": tid, "item_id": item["id"],
                                                     "action": {"type": "demo.click", "payload": {"n": 0}}})
        assert list(ev) == [{"type": "error", "code": "stream.error", "allow_retry": False}], list(ev)
    assert client.all_items(tid) == before


def test_sync_custom_action(client):
    tid, w = widget_thread(client)
    r = client.ok("threads.sync_custom_action", {"thread_id": tid, "item_id": w["id"],
                                                  "action": {"type": "demo.sync", "payload": {"n": 0}}})
    assert set(r) == {"updated_item"}
    u = r["updated_item"]
    assert u["id"] == w["id"] and u["type"] == "widget" and u["thread_id"] == tid
    assert u["created_at"] == w["created_at"]
    assert count_text(u) == "Clicked 1 time"
    assert stored_widget(client, tid, w["id"]) == u

    r = client.ok("threads.sync_custom_action", {"thread_id": tid, "item_id": w["id"],
                                                  "action": {"type": "demo.click", "payload": {"n": 1}}})
    assert count_text(r["updated_item"]) == "Clicked 2 times"
    assert stored_widget(client, tid, w["id"]) == r["updated_item"]

    # any other action type → {} and nothing changes
    assert client.ok("threads.sync_custom_action", {"thread_id": tid, "item_id": w["id"],
                                                     "action": {"type": "demo.other"}}) == {}
    assert count_text(stored_widget(client, tid, w["id"])) == "Clicked 2 times"
    # no new items
    assert len(client.all_items(tid)) == 3


def test_sync_custom_action_on_non_widget(client):
    tid, w = widget_thread(client)
    user = client.all_items(tid)[0]
    expect_error(client.call("threads.sync_custom_action", {"thread_id": tid, "item_id": user["id"],
                                                            "action": {"type": "demo.sync"}}), 400, "not_widget")


def test_actions_while_the_thread_is_streaming(server, client):
    tid, w = widget_thread(client)
    rs = RawStream(server, client.tenant, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("slow reply please")})
    try:
        rs.wait_for(lambda e: any(x["type"] == "thread.item.updated" for x in e), "a text delta")
        # a sync action is usable while a response is streaming
        r = client.ok("threads.sync_custom_action", {"thread_id": tid, "item_id": w["id"],
                                                      "action": {"type": "demo.sync", "payload": {"n": 0}}})
        assert count_text(r["updated_item"]) == "Clicked 1 time"
        # a streaming action is a second run: refused with one error event
        ev = client.stream("threads.custom_action", {"thread_id": tid, "item_id": w["id"],
                                                     "action": {"type": "demo.click", "payload": {"n": 1}}})
        assert len(ev) == 1 and ev[0]["type"] == "error" and ev[0]["code"] == "custom" \
            and ev[0]["allow_retry"] is False, list(ev)
        final = rs.read_all()
    finally:
        rs.close()
    expect_seq(final, r"done:user_message stream_options " + DEMO_REPLY)
    assert count_text(stored_widget(client, tid, w["id"])) == "Clicked 1 time"


def test_retry_replaces_widget_turn(client):
    tid, w = widget_thread(client)
    user = client.all_items(tid)[0]
    ev = client.stream("threads.retry_after_item", {"thread_id": tid, "item_id": user["id"]})
    expect_seq(ev, r"stream_options (progress )?done:widget (progress )?added:assistant_message part.added"
                   r"( delta)+ part.done done:assistant_message")
    w2 = ev.of("thread.item.done")[0]["item"]
    assert w2["id"] != w["id"] and count_text(w2) == "Clicked 0 times"
    items = client.all_items(tid)
    assert [i["id"] for i in items] == [user["id"], w2["id"], ev[-1]["item"]["id"]]
    # the old widget is gone
    expect_error(client.call("threads.sync_custom_action", {"thread_id": tid, "item_id": w["id"],
                                                            "action": {"type": "demo.sync"}}), 404, "not_found")
