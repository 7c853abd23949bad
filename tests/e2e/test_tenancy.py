"""Isolation: another account's user and another user of the same account see nothing, and
cannot tell the owner's ids from ids that do not exist."""

import json
import re
import secrets
import time
from urllib.parse import urlsplit

import pytest
import requests

from conftest import HTTP_TIMEOUT, Client, expect_error, msg_input

SECRET_PDF = b"%PDF-1.4 the owner's secret"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63fcff1f0000050103008dd1cf4b0000000049454e44ae426082")


@pytest.fixture
def world(server, client):
    """The owner's thread (one widget turn), an uploaded (attachable) PDF, an uploaded image, and
    an attachment still waiting for its bytes."""
    tid, _ = client.create_thread("owner's secret thread with a widget")
    items = client.all_items(tid)
    att = client.upload("secret.pdf", "application/pdf", SECRET_PDF)
    img = client.upload("secret.png", "image/png", PNG)
    pending = client.ok("attachments.create", {"name": "later.txt", "size": 5, "mime_type": "text/plain"})
    t = server.new_user(client.tenant.account_id, client.tenant.agent_id)
    same_account = Client(server, t)
    other_account = Client(server, server.new_tenant())
    return {"tid": tid, "items": items, "att": att, "img": img, "pending": pending,
            "thread": client.get_thread(tid),
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


# ---- the not-found matrix: a foreign id answers exactly like an id that does not exist ----------


def fake_id(real):
    """A random id of the same shape (prefix, length, alphabet) that names nothing."""
    prefix, _, rest = real.partition("_")
    return prefix + "_" + secrets.token_hex(len(rest))[:len(rest)]


def swap_ids(v, mapping):
    if isinstance(v, str):
        return mapping.get(v, v)
    if isinstance(v, list):
        return [swap_ids(x, mapping) for x in v]
    if isinstance(v, dict):
        return {k: swap_ids(x, mapping) for k, x in v.items()}
    return v


def normalized(body, ids):
    """The JSON body with the ids the request named replaced (some messages echo the id)."""
    text = json.dumps(body, sort_keys=True)
    for i in ids:
        text = text.replace(i, "<id>")
    return json.loads(text)


def local_url(server, url):
    u = urlsplit(url)
    return f"{server.url}{u.path}" + (f"?{u.query}" if u.query else "")


def owner_ids(world):
    ids = [world["tid"], world["att"]["id"], world["img"]["id"], world["pending"]["id"]]
    return ids + [i["id"] for i in world["items"]]


def same_as_nonexistent(other, typ, params, mapping):
    """other's call on the owner's ids and on fresh fake ids: both 404 not_found, same body."""
    r = other.call(typ, params)
    body = expect_error(r, 404, "not_found")
    fake_params = swap_ids(params, mapping)
    assert fake_params != params
    rf = other.call(typ, fake_params)
    fbody = expect_error(rf, 404, "not_found")
    assert normalized(body, mapping) == normalized(fbody, mapping.values()), (typ, body, fbody)
    assert r.headers.get("Content-Type") == rf.headers.get("Content-Type")


@pytest.mark.parametrize("who", ["same-account user", "other-account user"])
def test_foreign_ids_look_nonexistent(server, client, world, who):
    other = world["others"][who]
    tid = world["tid"]
    user, widget, asst = world["items"]
    att, img, pending = world["att"], world["img"], world["pending"]
    mapping = {i: fake_id(i) for i in owner_ids(world)}

    calls = [
        ("threads.get_by_id", {"thread_id": tid}),
        ("items.list", {"thread_id": tid}),
        ("threads.update", {"thread_id": tid, "title": "pwned"}),
        ("threads.delete", {"thread_id": tid}),
        ("items.feedback", {"thread_id": tid, "item_ids": [asst["id"]], "kind": "negative"}),
        ("attachments.delete", {"attachment_id": att["id"]}),
        ("attachments.delete", {"attachment_id": img["id"]}),
        ("attachments.delete", {"attachment_id": pending["id"]}),
        ("threads.add_user_message", {"thread_id": tid, "input": msg_input("hi")}),
        ("threads.retry_after_item", {"thread_id": tid, "item_id": user["id"]}),
        ("threads.custom_action", {"thread_id": tid, "item_id": widget["id"], "action": {"type": "demo.click"}}),
        ("threads.sync_custom_action", {"thread_id": tid, "item_id": widget["id"],
                                        "action": {"type": "demo.sync"}}),
        ("threads.add_client_tool_output", {"thread_id": tid, "result": {}}),
        # the owner's attachments in the other user's message: uploaded or not, not found
        ("threads.create", {"input": msg_input("steal", attachments=[att["id"]])}),
        ("threads.create", {"input": msg_input("steal", attachments=[img["id"]])}),
        ("threads.create", {"input": msg_input("steal", attachments=[pending["id"]])}),
    ]
    for typ, params in calls:
        same_as_nonexistent(other, typ, params, mapping)

    # into a thread of their own
    own, _ = other.create_thread("my own thread")
    own_items = other.all_items(own)
    for a in (att, img, pending):
        same_as_nonexistent(other, "threads.add_user_message",
                            {"thread_id": own, "input": msg_input("steal", attachments=[a["id"]])}, mapping)
    # the owner's items named in a thread of their own
    for typ, params in [
        ("items.feedback", {"thread_id": own, "item_ids": [asst["id"]], "kind": "positive"}),
        ("threads.retry_after_item", {"thread_id": own, "item_id": user["id"]}),
        ("threads.custom_action", {"thread_id": own, "item_id": widget["id"], "action": {"type": "demo.click"}}),
        ("threads.sync_custom_action", {"thread_id": own, "item_id": widget["id"], "action": {"type": "demo.sync"}}),
    ]:
        same_as_nonexistent(other, typ, params, mapping)
    assert other.all_items(own) == own_items
    assert [t["id"] for t in other.list_threads()["data"]] == [own]

    # the attachment routes, with the other user's credentials
    auth = other.auth_headers()

    def same_http(method, path_of, **kw):
        out = []
        headers = dict(auth, **kw.pop("headers", {}))
        for i in (path_of(True), path_of(False)):
            r = requests.request(method, server.url + i, headers=headers, timeout=HTTP_TIMEOUT, **kw)
            assert r.status_code == 404, f"{method} {i}: {r.status_code} {r.content[:300]!r}"
            out.append(r)
        real, fake = out
        assert real.headers.get("Content-Type") == fake.headers.get("Content-Type")
        assert real.headers.get("Content-Length") == fake.headers.get("Content-Length")
        if method != "HEAD":
            assert real.json()["code"] == "not_found"
            assert normalized(real.json(), mapping) == normalized(fake.json(), mapping.values())
        else:
            assert real.content == fake.content == b""

    for a in (att, img, pending):
        aid = a["id"]

        def path(real, pre, aid=aid):
            return f"{pre}{aid if real else mapping[aid]}"
        same_http("GET", lambda real: path(real, "/chatkit/attachments/"))
        same_http("HEAD", lambda real: path(real, "/chatkit/attachments/"))
        size = 5 if a is pending else len(SECRET_PDF if a is att else PNG)
        same_http("PUT", lambda real: path(real, "/chatkit/upload/"), data=b"x" * size,
                  headers={"Content-Type": "application/octet-stream"})
        same_http("POST", lambda real: path(real, "/chatkit/upload/"),
                  files={"file": ("x.txt", b"x" * size, "text/plain")})

    # the owner's data is unchanged
    assert client.get_thread(tid) == world["thread"]
    assert client.all_items(tid) == world["items"]
    for a, data in ((att, SECRET_PDF), (img, PNG)):
        r = requests.get(f"{server.url}/chatkit/attachments/{a['id']}", headers=client.auth_headers(),
                         timeout=HTTP_TIMEOUT)
        assert r.status_code == 200 and r.content == data
    # the pending attachment was not claimed by the refused uploads: the owner uploads it
    r = client.put_bytes(pending["id"], b"later")
    assert r.status_code == 200, r.text
    # and every one of them is still the owner's to attach
    ev = client.stream("threads.create", {"input": msg_input("mine", attachments=[att["id"], img["id"],
                                                                                 pending["id"]])})
    assert [x["id"] for x in ev[1]["item"]["attachments"]] == [att["id"], img["id"], pending["id"]]
    assert len(client.list_threads()["data"]) == 2


def split_signed(url):
    u = urlsplit(url)
    m = re.fullmatch(r"/chatkit/attachments/([A-Za-z0-9_-]+)", u.path)
    assert m and "sig=" in u.query and "exp=" in u.query, url
    return m.group(1), u.query


@pytest.mark.parametrize("who", ["same-account user", "other-account user"])
def test_signed_preview_urls(server, client, world, who):
    other = world["others"][who]
    img = world["img"]
    img_id, q = split_signed(img["preview_url"])
    assert img_id == img["id"]
    url = f"{server.url}/chatkit/attachments/{img_id}?{q}"
    # a valid signed URL is a capability: whoever holds it reads the image, with or without
    # credentials of their own
    r = requests.get(url, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.content == PNG
    r = requests.get(url, headers=other.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.content == PNG

    # the signature is per id: the other user's own signed URL does not open the owner's image
    mine = other.upload("mine.png", "image/png", PNG)
    mine_id, mq = split_signed(mine["preview_url"])
    assert requests.get(f"{server.url}/chatkit/attachments/{mine_id}?{mq}", timeout=HTTP_TIMEOUT).status_code == 200
    r = requests.get(f"{server.url}/chatkit/attachments/{img_id}?{mq}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and r.json()["code"] == "invalid_signature", r.text
    assert r.content != PNG
    # with credentials, a bad signature falls back to them: the owner's id is not found
    r = requests.get(f"{server.url}/chatkit/attachments/{img_id}?{mq}", headers=other.auth_headers(),
                     timeout=HTTP_TIMEOUT)
    fake = requests.get(f"{server.url}/chatkit/attachments/{fake_id(img_id)}?{mq}", headers=other.auth_headers(),
                        timeout=HTTP_TIMEOUT)
    assert r.status_code == fake.status_code == 404 and r.json() == fake.json()
    # nor does the owner's signature open the owner's other files
    for a in (world["att"], world["pending"]):
        r = requests.get(f"{server.url}/chatkit/attachments/{a['id']}?{q}", timeout=HTTP_TIMEOUT)
        assert r.status_code == 403 and r.json()["code"] == "invalid_signature", r.text
    # nor an edited expiry
    exp = int(re.search(r"exp=(\d+)", q).group(1))
    r = requests.get(url.replace(f"exp={exp}", f"exp={exp + 3600}"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and r.json()["code"] == "invalid_signature"
    # and the owner's image is still there for the owner
    r = requests.get(f"{server.url}/chatkit/attachments/{img_id}", headers=client.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.content == PNG


def test_signed_preview_url_expires(server_factory):
    s = server_factory(env={"CHATKIT_PREVIEW_TTL_S": "1", "CHATKIT_ALLOWED_MIME_TYPES": "image/*"})
    owner = s.client(s.new_tenant())
    other = s.client(s.new_user(owner.tenant.account_id, owner.tenant.agent_id))
    img = owner.upload("cat.png", "image/png", PNG)
    img_id, q = split_signed(img["preview_url"])
    url = f"{s.url}/chatkit/attachments/{img_id}?{q}"
    exp = int(re.search(r"exp=(\d+)", q).group(1))
    assert exp - time.time() < 10, "CHATKIT_PREVIEW_TTL_S=1 gives a short-lived URL"
    r = requests.get(url, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.content == PNG
    time.sleep(max(0.0, exp - time.time() + 0.1))
    r = requests.get(url, timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and r.json()["code"] == "invalid_signature", r.text
    # an expired link falls back to credentials: the owner's work, another user's do not
    r = requests.get(url, headers=owner.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.content == PNG
    r = requests.get(url, headers=other.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    # a fresh read of the item signs a fresh URL
    again = owner.ok("attachments.create", {"name": "dog.png", "size": len(PNG), "mime_type": "image/png"})
    _, q2 = split_signed(again["preview_url"])
    assert int(re.search(r"exp=(\d+)", q2).group(1)) > time.time()
