"""attachments.create / delete, attachments in user messages, items.feedback."""

import pytest

from conftest import SHARED_ENV, expect_error, msg_input, unsign

PUBLIC_URL = SHARED_ENV["CHATKIT_PUBLIC_URL"]


def create(client, name, size, mime):
    return client.ok("attachments.create", {"name": name, "size": size, "mime_type": mime})


def check_descriptor(a):
    d = a["upload_descriptor"]
    assert d["method"] == "PUT" and d["headers"] == {}
    assert d["url"].endswith(f"/chatkit/upload/{a['id']}"), d["url"]
    assert d["url"].startswith(PUBLIC_URL + "/"), f"upload URL {d['url']!r} is not under CHATKIT_PUBLIC_URL"


def test_create_image_attachment(client):
    a = create(client, "cat.png", 1234, "image/png")
    assert a["type"] == "image" and a["name"] == "cat.png" and a["mime_type"] == "image/png"
    assert a["preview_url"]
    check_descriptor(a)
    assert set(a) == {"id", "name", "mime_type", "type", "preview_url", "upload_descriptor"}


@pytest.mark.parametrize("name,mime", [("report.pdf", "application/pdf"), ("notes.txt", "text/plain")])
def test_create_file_attachment(client, name, mime):
    a = create(client, name, 10, mime)
    assert a["type"] == "file" and a["name"] == name and a["mime_type"] == mime
    assert "preview_url" not in a
    check_descriptor(a)


def test_mime_wildcard_and_limits(client):
    assert create(client, "x.webp", 1, "image/webp")["type"] == "image"
    assert create(client, "big.png", 1000000, "image/png")["type"] == "image"  # exactly the limit
    expect_error(client.call("attachments.create", {"name": "big.png", "size": 1000001, "mime_type": "image/png"}),
                 413, "file_too_large")
    for mime in ("application/zip", "application/x-msdownload", "video/mp4", "imagex/png"):
        expect_error(client.call("attachments.create", {"name": "x", "size": 1, "mime_type": mime}),
                     415, "unsupported_media_type")


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63fcff1f0000050103008dd1cf4b0000000049454e44ae426082")


def test_attachments_in_messages(client):
    img = client.upload("cat.png", "image/png", PNG)
    doc = client.upload("report.pdf", "application/pdf", b"%PDF-1.4 tiny")
    ev = client.stream("threads.create", {"input": msg_input("see attached", attachments=[img["id"], doc["id"]])})
    tid = ev[0]["thread"]["id"]
    user = ev[1]["item"]
    assert user["type"] == "user_message"
    assert unsign(user["attachments"]) == unsign([dict(img, thread_id=tid), dict(doc, thread_id=tid)])
    assert unsign(client.all_items(tid)[0]) == unsign(user)

    # in an existing thread too
    txt = client.upload("notes.txt", "text/plain", b"hello")
    ev = client.send(tid, "one more", attachments=[txt["id"]])
    assert ev[0]["item"]["attachments"] == [dict(txt, thread_id=tid)]
    assert client.all_items(tid)[2]["attachments"] == [dict(txt, thread_id=tid)]
    assert unsign(client.get_thread(tid)["items"]["data"][0]["attachments"]) == unsign(user["attachments"])


def test_unknown_attachment_in_message_creates_nothing(client):
    bad = "atc_" + "0" * 24
    expect_error(client.call("threads.create", {"input": msg_input("hi", attachments=[bad])}), 404, "not_found")
    assert client.list_threads()["data"] == []
    tid, _ = client.create_thread("hello")
    before = client.all_items(tid)
    ok = client.upload("cat.png", "image/png", PNG)
    r = client.call("threads.add_user_message", {"thread_id": tid, "input": msg_input("hi", attachments=[ok["id"], bad])})
    expect_error(r, 404, "not_found")
    assert client.all_items(tid) == before
    assert [t["id"] for t in client.list_threads()["data"]] == [tid]


def test_delete_attachment(client):
    a = create(client, "cat.png", 1234, "image/png")
    assert client.ok("attachments.delete", {"attachment_id": a["id"]}) == {}
    expect_error(client.call("attachments.delete", {"attachment_id": a["id"]}), 404, "not_found")
    r = client.call("threads.create", {"input": msg_input("hi", attachments=[a["id"]])})
    expect_error(r, 404, "not_found")
    assert client.list_threads()["data"] == []


def test_attachment_ids_are_unique(client):
    ids = {create(client, f"f{i}.txt", 1, "text/plain")["id"] for i in range(20)}
    assert len(ids) == 20


# ---- feedback ------------------------------------------------------------------------------

def test_feedback(client):
    tid, _ = client.create_thread("hello")
    u, a = client.all_items(tid)
    assert client.ok("items.feedback", {"thread_id": tid, "item_ids": [a["id"]], "kind": "positive"}) == {}
    assert client.ok("items.feedback", {"thread_id": tid, "item_ids": [u["id"], a["id"]], "kind": "negative"}) == {}
    other, _ = client.create_thread("other thread")
    oa = client.all_items(other)[1]
    expect_error(client.call("items.feedback", {"thread_id": tid, "item_ids": [oa["id"]], "kind": "positive"}),
                 404, "not_found")
    assert client.all_items(tid) == [u, a]
