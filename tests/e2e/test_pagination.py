"""Cursor pagination of threads.list, items.list and the items embedded by get_by_id (§10)."""

from conftest import expect_error


def ids(page):
    return [x["id"] for x in page["data"]]


def test_threads_list_pages(client):
    created = [client.create_thread(f"thread {i:02d}")[0] for i in range(25)]
    newest = created[::-1]

    p1 = client.list_threads(limit=20)
    assert ids(p1) == newest[:20]
    assert p1["has_more"] is True and p1["after"] == newest[19]
    stamps = [t["created_at"] for t in p1["data"]]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 20
    assert all(t["items"] == {"data": [], "has_more": False} for t in p1["data"])
    assert [t["title"] for t in p1["data"][:2]] == ["thread 24", "thread 23"]

    p2 = client.list_threads(limit=20, after=p1["after"])
    assert ids(p2) == newest[20:]
    assert p2["has_more"] is False and "after" not in p2

    # default limit is 20, default order desc
    assert ids(client.list_threads()) == newest[:20]
    assert ids(client.list_threads(limit=0)) == newest[:20]

    # ascending
    a1 = client.list_threads(order="asc", limit=20)
    assert ids(a1) == created[:20] and a1["after"] == created[19]
    a2 = client.list_threads(order="asc", limit=20, after=a1["after"])
    assert ids(a2) == created[20:] and a2["has_more"] is False

    # "lax" ints: a numeric string is accepted
    p = client.list_threads(limit="5")
    assert ids(p) == newest[:5] and p["has_more"] is True and p["after"] == newest[4]
    p = client.list_threads(limit=5, after=p["after"], order="desc")
    assert ids(p) == newest[5:10]


def test_items_list_pages(client):
    tid, _ = client.create_thread("turn 0")
    for i in range(1, 13):
        client.send(tid, f"turn {i}")
    every = client.all_items(tid)  # oldest first
    assert len(every) == 26
    assert [i["type"] for i in every] == ["user_message", "assistant_message"] * 13
    stamps = [i["created_at"] for i in every]
    assert stamps == sorted(stamps), "created_at must never decrease within a thread"
    newest = [i["id"] for i in every][::-1]

    d1 = client.items(tid)
    assert ids(d1) == newest[:20]
    assert d1["has_more"] is True and d1["after"] == newest[19]
    d2 = client.items(tid, after=d1["after"])
    assert ids(d2) == newest[20:]
    assert d2["has_more"] is False and "after" not in d2

    a1 = client.items(tid, order="asc", limit=20)
    assert a1["data"] == every[:20] and a1["after"] == every[19]["id"]
    a2 = client.items(tid, order="asc", limit=20, after=a1["after"])
    assert a2["data"] == every[20:] and a2["has_more"] is False

    small = client.items(tid, limit="3", order="asc")
    assert small["data"] == every[:3] and small["has_more"] is True

    # get_by_id embeds the OLDEST 20 items, ascending
    t = client.get_thread(tid)
    assert t["items"]["data"] == every[:20]
    assert t["items"]["has_more"] is True and t["items"]["after"] == every[19]["id"]


def test_unknown_cursor(client):
    tid, _ = client.create_thread("hello")
    expect_error(client.call("threads.list", {"after": "thr_" + "0" * 24}), 400, "invalid_cursor")
    expect_error(client.call("items.list", {"thread_id": tid, "after": "msg_" + "0" * 24}), 400, "invalid_cursor")
    # a cursor from another thread is not a cursor of this one
    other, _ = client.create_thread("other")
    foreign = client.items(other)["data"][0]["id"]
    expect_error(client.call("items.list", {"thread_id": tid, "after": foreign}), 400, "invalid_cursor")
