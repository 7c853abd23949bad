"""Attachment bytes end to end: two-phase uploads (attachments.create, then PUT raw bytes or
POST multipart to /chatkit/upload/<id>), direct uploads (POST /chatkit/upload?agent_id=),
content checks, downloads, signed preview URLs, deletion and the sweep of unattached files."""

import base64
import os
import re
import time
import uuid
from pathlib import Path

import pytest
import requests

import shapes
from conftest import wait_until
from conftest import (HTTP_TIMEOUT, SHARED_ENV, Client, RawConn, build_request, check_response,
                      expect_error, msg_input, unsign)

PUBLIC_URL = SHARED_ENV["CHATKIT_PUBLIC_URL"]

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + b"\x00" * 16 + bytes.fromhex("ffd9")
PDF = b"%PDF-1.4\n% tiny test document\n%%EOF\n"
TEXT = "plain text, with ünïcödé\n".encode()

SIGNED_RE = re.compile(r"^(?P<base>[^?]+)\?exp=(?P<exp>\d+)&sig=(?P<sig>[A-Za-z0-9_-]{43})$")


# ------------------------------------------------------------------------------------------
# helpers


def create(client, name, size, mime, **kw):
    return client.ok("attachments.create", {"name": name, "size": size, "mime_type": mime}, **kw)


def local(server, url):
    """A URL the server returned (under CHATKIT_PUBLIC_URL, or the Host it was asked on) → the
    same URL on the test server."""
    for prefix in (PUBLIC_URL, server.url):
        if url.startswith(prefix + "/"):
            return server.url + url[len(prefix):]
    raise AssertionError(f"URL {url!r} is not under {PUBLIC_URL} or {server.url}")


def upload_url(server, att_id=None):
    return f"{server.url}/chatkit/upload" + (f"/{att_id}" if att_id is not None else "")


def file_url(server, att_id):
    return f"{server.url}/chatkit/attachments/{att_id}"


def auth(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def multipart(parts, boundary=None):
    """parts: (field name, filename or None, part Content-Type or None, bytes) → (body, the
    request's Content-Type). Built by hand so that names go on the wire exactly as given."""
    b = boundary or "ckTestBoundary" + uuid.uuid4().hex
    out = b""
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        head = f"--{b}\r\nContent-Disposition: {disp}\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "") + "\r\n"
        out += head.encode("utf-8") + data + b"\r\n"
    out += f"--{b}--\r\n".encode()
    return out, f"multipart/form-data; boundary={b}"


def checked(resp):
    """Validate an upload/download reply that is an error (JSON error body in resp.body)."""
    if resp.status_code >= 400 and resp.request.method != "HEAD":
        check_response(resp, None, None)
    else:
        resp.body = None
    return resp


def attachment_reply(resp, status=200):
    """A successful upload reply → the Attachment, validated."""
    assert resp.status_code == status, f"upload → {resp.status_code} {resp.content[:400]!r}"
    ct = resp.headers.get("Content-Type", "")
    assert ct.split(";")[0].strip() == "application/json", ct
    a = shapes.strict_loads(resp.content)
    shapes.attachment(a, "upload reply")
    shapes.no_nulls(a, "upload reply")
    assert "upload_descriptor" not in a and "thread_id" not in a, a
    return a


def put(client, att_id, data, token=None, headers=None):
    """PUT raw bytes (the owner's token unless token is given; "" = no credentials)."""
    tok = client.tenant.token if token is None else token
    h = {"Content-Type": "application/octet-stream", **auth(tok), **(headers or {})}
    return checked(requests.put(upload_url(client.server, att_id), data=data, headers=h,
                                timeout=HTTP_TIMEOUT))


def post_form(client, att_id, parts, token=None, agent=None, query=None):
    """POST a multipart body: to /chatkit/upload/<id> (two-phase) or, with att_id None, to
    /chatkit/upload?agent_id=<agent> (direct; the client's agent unless given)."""
    tok = client.tenant.token if token is None else token
    body, ctype = multipart(parts)
    url = upload_url(client.server, att_id)
    if att_id is None:
        url += query if query is not None else f"?agent_id={agent or client.tenant.agent_id}"
    return checked(requests.post(url, data=body, headers={"Content-Type": ctype, **auth(tok)},
                                 timeout=HTTP_TIMEOUT))


def direct(client, filename, ctype, data, **kw):
    return post_form(client, None, [("file", filename, ctype, data)], **kw)


def get(server, url_or_id, token=None, method="GET", headers=None):
    url = url_or_id if "/" in url_or_id else file_url(server, url_or_id)
    h = {**auth(token), **(headers or {})}
    return checked(requests.request(method, url, headers=h, timeout=HTTP_TIMEOUT))


def files_dir(server):
    return Path(server.data_dir) / "files"


def part_files(server):
    """The temporary files of uploads in progress (<data_dir>/files/tmp)."""
    d = files_dir(server) / "tmp"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def no_new_parts(server, baseline):
    wait_until(lambda: part_files(server) <= baseline, what="no leftover temporary upload files")


def stored(server, att_id):
    p = files_dir(server) / att_id
    return p.read_bytes() if p.is_file() else None


def others(server, client):
    """Another user of the same account and a user of another account."""
    return {"same-account user": Client(server, server.new_user(client.tenant.account_id, client.tenant.agent_id)),
            "other-account user": Client(server, server.new_tenant())}


def nonexistent_id():
    return "atc_" + uuid.uuid4().hex[:24]


def raw_put_head(client, att_id, length=None, chunked=False, expect=False):
    h = {"Authorization": f"Bearer {client.tenant.token}", "Content-Type": "application/octet-stream"}
    if chunked:
        h["Transfer-Encoding"] = "chunked"
    else:
        h["Content-Length"] = str(length)
    if expect:
        h["Expect"] = "100-continue"
    return build_request("PUT", f"/chatkit/upload/{att_id}", b"", h)


def put_when_released(client, att_id, data):
    """PUT once the server has released the claim of an interrupted upload (409
    upload_in_progress until it has noticed the close) → the upload reply."""
    def attempt():
        r = put(client, att_id, data)
        if r.status_code == 409:
            expect_error(r, 409, "upload_in_progress")
            return None
        return r
    return attachment_reply(wait_until(attempt, what="the interrupted upload's claim released"))


def raw_json(status, headers, body):
    assert headers.get("content-type", "").split(";")[0] == "application/json", (status, headers, body[:200])
    return shapes.strict_loads(body)


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


# ------------------------------------------------------------------------------------------
# two-phase uploads


def test_two_phase_put(server, client):
    a = create(client, "dot.png", len(PNG), "image/png")
    d = a["upload_descriptor"]
    assert d["method"] == "PUT" and d["headers"] == {}
    assert d["url"] == f"{PUBLIC_URL}/chatkit/upload/{a['id']}", d["url"]
    assert stored(server, a["id"]) is None
    r = requests.put(local(server, d["url"]), data=PNG, headers=auth(client.tenant.token), timeout=HTTP_TIMEOUT)
    up = attachment_reply(r)
    want = {k: v for k, v in a.items() if k != "upload_descriptor"}
    assert unsign(up) == unsign(want)
    assert up["type"] == "image" and up["name"] == "dot.png" and up["mime_type"] == "image/png"
    assert stored(server, a["id"]) == PNG
    dl = get(server, a["id"], client.tenant.token)
    assert dl.status_code == 200 and dl.content == PNG


@pytest.mark.parametrize("name,mime,data", [("notes.txt", "text/plain", TEXT),
                                            ("paper.pdf", "application/pdf", PDF),
                                            ("photo.jpg", "image/jpeg", JPEG)],
                         ids=["text", "pdf", "jpeg"])
def test_two_phase_multipart_post(server, client, name, mime, data):
    a = create(client, name, len(data), mime)
    # other form fields are ignored; the part's own filename/type do not rename or retype it
    r = post_form(client, a["id"], [("note", None, None, b"ignored"),
                                    ("file", "whatever.bin", "application/octet-stream", data)])
    up = attachment_reply(r)
    assert unsign(up) == unsign({k: v for k, v in a.items() if k != "upload_descriptor"})
    assert stored(server, a["id"]) == data
    assert get(server, a["id"], client.tenant.token).content == data


@pytest.mark.parametrize("who", ["same-account user", "other-account user"])
def test_upload_only_by_owner(server, client, who):
    other = others(server, client)[who]
    a = create(client, "notes.txt", len(TEXT), "text/plain")
    missing_put = put(other, nonexistent_id(), TEXT)
    expect_error(missing_put, 404, "not_found")
    r = put(other, a["id"], TEXT)
    expect_error(r, 404, "not_found")
    assert r.body == missing_put.body, "another user's attachment must look like a nonexistent one"
    r = post_form(other, a["id"], [("file", "notes.txt", "text/plain", TEXT)])
    expect_error(r, 404, "not_found")
    assert r.body == missing_put.body
    # no credentials at all
    expect_error(put(client, a["id"], TEXT, token=""), 401, "unauthorized")
    assert stored(server, a["id"]) is None
    # the owner's upload is still possible
    attachment_reply(put(client, a["id"], TEXT))
    assert stored(server, a["id"]) == TEXT


def test_upload_only_once(server, client):
    a = create(client, "notes.txt", 5, "text/plain")
    attachment_reply(put(client, a["id"], b"first"))
    expect_error(put(client, a["id"], b"other"), 409, "already_uploaded")
    expect_error(post_form(client, a["id"], [("file", "n.txt", "text/plain", b"other")]), 409, "already_uploaded")
    assert stored(server, a["id"]) == b"first"
    assert get(server, a["id"], client.tenant.token).content == b"first"


def test_concurrent_upload_in_progress(server, client):
    data = b"0123456789" * 100
    a = create(client, "slow.txt", len(data), "text/plain")
    with RawConn(server.port) as c:
        # the 100 Continue comes once the server has claimed the attachment for this upload
        c.send(raw_put_head(client, a["id"], len(data), expect=True))
        status, _ = c.read_head()
        assert status == 100
        c.send(data[:300])
        expect_error(put(client, a["id"], data), 409, "upload_in_progress")
        expect_error(post_form(client, a["id"], [("file", "s.txt", "text/plain", data)]), 409, "upload_in_progress")
        c.send(data[300:])
        status, headers, body = c.read_response()
        assert status == 200, body[:300]
        assert raw_json(status, headers, body)["id"] == a["id"]
    expect_error(put(client, a["id"], data), 409, "already_uploaded")
    assert stored(server, a["id"]) == data


def test_content_length_must_match_declared_size(server, client):
    a = create(client, "notes.txt", 10, "text/plain")
    expect_error(put(client, a["id"], b"x" * 11), 413, "file_too_large")
    expect_error(put(client, a["id"], b"x" * 9), 400, "size_mismatch")
    expect_error(put(client, a["id"], b""), 400, "size_mismatch")
    # multipart: a file part bigger or smaller than declared
    expect_error(post_form(client, a["id"], [("file", "n.txt", "text/plain", b"x" * 11)]), 413, "file_too_large")
    expect_error(post_form(client, a["id"], [("file", "n.txt", "text/plain", b"x" * 9)]), 400, "size_mismatch")
    assert stored(server, a["id"]) is None
    attachment_reply(put(client, a["id"], b"x" * 10))
    assert stored(server, a["id"]) == b"x" * 10


def test_chunked_body_must_match_declared_size(server, client):
    a = create(client, "notes.txt", 10, "text/plain")
    with RawConn(server.port) as c:  # longer than declared
        c.send(raw_put_head(client, a["id"], chunked=True) + chunk(b"x" * 6) + chunk(b"y" * 6) + b"0\r\n\r\n")
        st, h, body = c.read_response()
        assert st == 413 and raw_json(st, h, body)["code"] == "file_too_large", (st, body)
    with RawConn(server.port) as c:  # shorter than declared
        c.send(raw_put_head(client, a["id"], chunked=True) + chunk(b"x" * 6) + b"0\r\n\r\n")
        st, h, body = c.read_response()
        assert st == 400 and raw_json(st, h, body)["code"] == "size_mismatch", (st, body)
    assert stored(server, a["id"]) is None
    with RawConn(server.port) as c:  # exact, in several chunks
        c.send(raw_put_head(client, a["id"], chunked=True) + chunk(b"0123") + chunk(b"456789") + b"0\r\n\r\n")
        st, h, body = c.read_response()
        assert st == 200, body[:300]
        assert raw_json(st, h, body)["id"] == a["id"]
    assert stored(server, a["id"]) == b"0123456789"


def fit(data, n):
    """data cut or zero-padded to n bytes (the sniffer looks at a file's start)."""
    return (data + b"\0" * n)[:n]


@pytest.mark.parametrize("mime,bad,good", [
    ("text/plain", PNG, b"t" * len(PNG)),                   # an image declared as text
    ("image/png", b"x" * len(PNG), PNG),                    # text declared as an image
    ("image/png", fit(JPEG, len(PNG)), PNG),                # a JPEG declared as PNG
    ("image/jpeg", fit(PNG, len(JPEG)), JPEG),              # a PNG declared as JPEG
    ("image/gif", fit(PNG, 40), fit(b"GIF89a", 40)),
    ("application/pdf", b"p" * len(PDF), PDF),              # text declared as PDF
    ("application/pdf", fit(PNG, len(PDF)), PDF),
    ("text/plain", b"bad \xff\xfe utf-8", b"good utf8 \xc3\xa9"),
], ids=["png-as-text", "text-as-png", "jpeg-as-png", "png-as-jpeg", "png-as-gif", "text-as-pdf",
        "png-as-pdf", "binary-as-text"])
def test_content_must_match_declared_type(server, client, mime, bad, good):
    assert len(bad) == len(good)
    a = create(client, "f", len(bad), mime)
    expect_error(put(client, a["id"], bad), 415, "content_mismatch")
    expect_error(post_form(client, a["id"], [("file", "f", mime, bad)]), 415, "content_mismatch")
    assert stored(server, a["id"]) is None
    expect_error(get(server, a["id"], client.tenant.token), 404, "not_found")
    # the failed uploads left it uploadable
    attachment_reply(put(client, a["id"], good))
    assert stored(server, a["id"]) == good
    assert get(server, a["id"], client.tenant.token).content == good


def test_failed_uploads_leave_attachment_uploadable(server, client):
    baseline = part_files(server)
    a = create(client, "dot.png", len(PNG), "image/png")
    expect_error(put(client, a["id"], PNG + b"!"), 413, "file_too_large")
    expect_error(put(client, a["id"], PNG[:-1]), 400, "size_mismatch")
    expect_error(put(client, a["id"], b"t" * len(PNG)), 415, "content_mismatch")
    expect_error(post_form(client, a["id"], [("nofile", None, None, PNG)]), 422, "file_required")
    assert stored(server, a["id"]) is None
    attachment_reply(post_form(client, a["id"], [("file", "dot.png", "image/png", PNG)]))
    assert stored(server, a["id"]) == PNG
    no_new_parts(server, baseline)


def test_svg_refused_at_create(client):
    for mime in ("image/svg+xml", "image/tiff", "image/heic"):
        expect_error(client.call("attachments.create", {"name": "x.svg", "size": 10, "mime_type": mime}),
                     415, "unsupported_media_type")


def test_interrupted_upload_keeps_nothing(server, client):
    data = b"%PDF-1.4\n" + b"z" * 5000
    a = create(client, "paper.pdf", len(data), "application/pdf")
    baseline = part_files(server)
    c = RawConn(server.port)
    try:
        c.send(raw_put_head(client, a["id"], len(data)) + data[:2000])
        # the bytes go to a temporary file while they arrive
        wait_until(lambda: part_files(server) - baseline, what="a temporary .part file")
    finally:
        c.close()
    no_new_parts(server, baseline)
    assert stored(server, a["id"]) is None
    expect_error(get(server, a["id"], client.tenant.token), 404, "not_found")
    # uploadable again
    put_when_released(client, a["id"], data)
    assert stored(server, a["id"]) == data
    no_new_parts(server, baseline)


def test_interrupted_chunked_upload_keeps_nothing(server, client):
    data = b"t" * 3000
    a = create(client, "notes.txt", len(data), "text/plain")
    baseline = part_files(server)
    with RawConn(server.port) as c:
        c.send(raw_put_head(client, a["id"], chunked=True, expect=True))
        assert c.read_head()[0] == 100
        c.send(chunk(data[:1000]))
        wait_until(lambda: part_files(server) - baseline, what="a temporary .part file")
    no_new_parts(server, baseline)
    put_when_released(client, a["id"], data)
    assert stored(server, a["id"]) == data


def test_interrupted_direct_upload_keeps_nothing(server, client):
    before = set(os.listdir(files_dir(server)))
    baseline = part_files(server)
    body, ctype = multipart([("file", "x.txt", "text/plain", b"y" * 5000)])
    with RawConn(server.port) as c:
        c.send(build_request("POST", f"/chatkit/upload?agent_id={client.tenant.agent_id}", b"", {
            "Authorization": f"Bearer {client.tenant.token}", "Content-Type": ctype,
            "Content-Length": str(len(body)), "Expect": "100-continue"}))
        assert c.read_head()[0] == 100
        c.send(body[:1000])
        wait_until(lambda: part_files(server) - baseline, what="a temporary .part file")
    no_new_parts(server, baseline)
    assert set(os.listdir(files_dir(server))) - before == set()


def test_content_length_far_over_declared_size_refused_before_body(server, client):
    a = create(client, "notes.txt", 10, "text/plain")
    with RawConn(server.port, timeout=5) as c:
        c.send(raw_put_head(client, a["id"], 5_000_000))  # no body: the answer must not wait for it
        st, h, body = c.read_response()
    assert st == 413, (st, body)
    # file_too_large when the size is checked against the declared one; a length beyond the
    # server's streamed-body limit (CHATKIT_UPLOAD_MAX_BYTES + 64 KiB) is refused earlier, by
    # the HTTP layer, as payload_too_large
    assert raw_json(st, h, body)["code"] in ("file_too_large", "payload_too_large"), body
    attachment_reply(put(client, a["id"], b"0123456789"))


def test_empty_text_file(server, client):
    a = create(client, "empty.txt", 0, "text/plain")
    attachment_reply(put(client, a["id"], b""))
    assert stored(server, a["id"]) == b""
    r = get(server, a["id"], client.tenant.token)
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"
    # an empty file is no image
    b = create(client, "empty.png", 0, "image/png")
    expect_error(put(client, b["id"], b""), 415, "content_mismatch")


def test_attachment_deleted_during_its_upload(server, client):
    data = b"d" * 1000
    a = create(client, "notes.txt", len(data), "text/plain")
    baseline = part_files(server)
    with RawConn(server.port) as c:
        c.send(raw_put_head(client, a["id"], len(data), expect=True))
        assert c.read_head()[0] == 100
        c.send(data[:500])
        assert client.ok("attachments.delete", {"attachment_id": a["id"]}) == {}
        c.send(data[500:])
        st, h, body = c.read_response()
    assert st == 404 and raw_json(st, h, body)["code"] == "not_found", (st, body)
    wait_until(lambda: stored(server, a["id"]) is None, what="no bytes kept for the deleted attachment")
    no_new_parts(server, baseline)
    expect_error(get(server, a["id"], client.tenant.token), 404, "not_found")


def test_path_like_names_are_cleaned(server_factory):
    srv = server_factory(env={"CHATKIT_ALLOWED_MIME_TYPES": "text/plain,image/*"})
    cl = Client(srv, srv.new_tenant())
    root = Path(srv.data_dir).parent
    before = {p for p in root.rglob("*")}
    ids = []
    for name, want in [("../../etc/passwd", "passwd"), ("C:\\x\\evil.txt", "evil.txt"),
                       ("..\\..\\..\\boot.ini", "boot.ini"), ("/abs/path/./n.txt", "n.txt")]:
        a = create(cl, name, len(TEXT), "text/plain")
        assert a["name"] == want, (name, a["name"])
        up = attachment_reply(put(cl, a["id"], TEXT))
        assert up["name"] == want
        dl = get(srv, a["id"], cl.tenant.token)
        assert dl.status_code == 200 and dl.content == TEXT
        disp = dl.headers["Content-Disposition"]
        assert f'filename="{want}"' in disp and f"filename*=UTF-8''{want}" in disp, disp
        ids.append(a["id"])
    # direct uploads: the multipart filename is cleaned the same way (a browser sends a Windows
    # path's backslashes bare)
    for filename, want in [("../../etc/passwd", "passwd"), ("C:\\x\\evil.txt", "evil.txt")]:
        up = attachment_reply(direct(cl, filename, "text/plain", TEXT), 201)
        assert up["name"] == want, (filename, up["name"])
        ids.append(up["id"])
    # and an RFC 8187 filename* carrying an encoded path
    body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd\r\n"
            b"Content-Type: text/plain\r\n\r\n" + TEXT + b"\r\n--B--\r\n")
    r = requests.post(upload_url(srv) + f"?agent_id={cl.tenant.agent_id}", data=body, timeout=HTTP_TIMEOUT,
                      headers={"Content-Type": "multipart/form-data; boundary=B", **auth(cl.tenant.token)})
    up = attachment_reply(r, 201)
    assert up["name"] == "passwd", up
    ids.append(up["id"])
    after = {p for p in root.rglob("*")}
    new_files = {p for p in after - before if p.is_file()}
    under_files = {p for p in new_files if p.parent == files_dir(srv)}
    assert under_files == {files_dir(srv) / i for i in ids}
    for p in new_files - under_files:
        # anything else new is the server's own state (database, key), never an uploaded name
        assert p.name not in ("passwd", "evil.txt", "boot.ini", "n.txt"), p
        assert p.parent == Path(srv.data_dir) or p.parent == root, p
    for i in ids:
        assert (files_dir(srv) / i).read_bytes() == TEXT
    assert not any(p.name in ("passwd", "evil.txt", "boot.ini") for p in root.rglob("*"))


# ------------------------------------------------------------------------------------------
# direct uploads


def test_direct_upload(server, client):
    r = direct(client, "dot.png", "image/png", PNG)
    up = attachment_reply(r, 201)
    assert up["name"] == "dot.png" and up["mime_type"] == "image/png" and up["type"] == "image"
    assert SIGNED_RE.match(up["preview_url"]), up["preview_url"]
    assert stored(server, up["id"]) == PNG
    assert get(server, up["id"], client.tenant.token).content == PNG
    # anonymous fetch through its signed preview URL
    pv = get(server, local(server, up["preview_url"]))
    assert pv.status_code == 200 and pv.content == PNG
    # usable in a message
    tid, ev = client.create_thread("look", attachments=[up["id"]])
    assert unsign(ev[1]["item"]["attachments"]) == unsign([dict(up, thread_id=tid)])

    r = direct(client, "notes.txt", "text/plain; charset=utf-8", TEXT)
    up = attachment_reply(r, 201)
    assert up["mime_type"] == "text/plain" and up["type"] == "file" and "preview_url" not in up
    assert stored(server, up["id"]) == TEXT


def test_direct_upload_without_agent_id_uses_the_only_agent(server, client):
    up = attachment_reply(direct(client, "n.txt", "text/plain", b"hi", query=""), 201)
    assert stored(server, up["id"]) == b"hi"


def test_direct_upload_errors(server, client):
    before = set(os.listdir(files_dir(server)))
    baseline = part_files(server)
    # no file part / an empty file input
    expect_error(post_form(client, None, [("other", None, None, b"x")]), 422, "file_required")
    expect_error(post_form(client, None, [("file", "", "application/octet-stream", b"")]), 422, "file_required")
    # not multipart
    r = checked(requests.post(upload_url(server) + f"?agent_id={client.tenant.agent_id}", data=PNG,
                              headers={"Content-Type": "image/png", **auth(client.tenant.token)},
                              timeout=HTTP_TIMEOUT))
    expect_error(r, 415, "unsupported_media_type")
    # a type that is not allowed
    expect_error(direct(client, "a.zip", "application/zip", b"PK\x03\x04" + b"\x00" * 30), 415,
                 "unsupported_media_type")
    # SVG (image/* is allowed, but an SVG can carry script): refused from the part's type, as
    # attachments.create does
    r = direct(client, "x.svg", "image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert r.status_code == 415 and r.body["code"] == "unsupported_media_type", r.content
    # the part's Content-Type lies about the content
    expect_error(direct(client, "a.txt", "text/plain", PNG), 415, "content_mismatch")
    expect_error(direct(client, "a.png", "image/png", TEXT), 415, "content_mismatch")
    expect_error(direct(client, "a.png", "image/png", JPEG), 415, "content_mismatch")
    # an agent of another account
    stranger = Client(server, server.new_tenant())
    expect_error(direct(client, "a.txt", "text/plain", TEXT, agent=stranger.tenant.agent_id), 422, "agent_required")
    # no credentials
    expect_error(direct(client, "a.txt", "text/plain", TEXT, token=""), 401, "unauthorized")
    # nothing was stored
    no_new_parts(server, baseline)
    assert set(os.listdir(files_dir(server))) - before == set()


def test_direct_upload_size_limit(server, client):
    limit = int(SHARED_ENV["CHATKIT_UPLOAD_MAX_BYTES"])
    baseline = part_files(server)
    data = b"a" * limit
    up = attachment_reply(direct(client, "big.txt", "text/plain", data), 201)
    assert stored(server, up["id"]) == data
    expect_error(direct(client, "big.txt", "text/plain", data + b"a"), 413, "file_too_large")
    no_new_parts(server, baseline)


# ------------------------------------------------------------------------------------------
# attachments in messages


def test_message_needs_uploaded_attachment(server, client):
    a = create(client, "notes.txt", len(TEXT), "text/plain")
    r = client.call("threads.create", {"input": msg_input("hi", attachments=[a["id"]])})
    expect_error(r, 409, "attachment_not_uploaded")
    assert client.list_threads()["data"] == []

    tid, _ = client.create_thread("hello")
    before = client.all_items(tid)
    r = client.call("threads.add_user_message", {"thread_id": tid, "input": msg_input("hi", attachments=[a["id"]])})
    expect_error(r, 409, "attachment_not_uploaded")
    assert client.all_items(tid) == before

    # after its upload it can be attached, and the item carries the upload reply + thread_id
    up = attachment_reply(put(client, a["id"], TEXT))
    ev = client.send(tid, "now with the file", attachments=[a["id"]])
    item = ev[0]["item"]
    assert item["type"] == "user_message"
    assert unsign(item["attachments"]) == unsign([dict(up, thread_id=tid)])
    assert unsign(client.all_items(tid)[len(before)]) == unsign(item)


@pytest.mark.parametrize("who", ["same-account user", "other-account user"])
def test_message_cannot_attach_others_upload(server, client, who):
    other = others(server, client)[who]
    theirs = other.upload("secret.txt", "text/plain", TEXT)
    r = client.call("threads.create", {"input": msg_input("steal", attachments=[theirs["id"]])})
    expect_error(r, 404, "not_found")
    assert client.list_threads()["data"] == []
    tid, _ = client.create_thread("hello")
    before = client.all_items(tid)
    mine = client.upload("mine.txt", "text/plain", TEXT)
    r = client.call("threads.add_user_message",
                    {"thread_id": tid, "input": msg_input("steal", attachments=[mine["id"], theirs["id"]])})
    expect_error(r, 404, "not_found")
    assert client.all_items(tid) == before
    # the owner still can
    otid, ev = other.create_thread("mine", attachments=[theirs["id"]])
    assert unsign(ev[1]["item"]["attachments"]) == unsign([dict(theirs, thread_id=otid)])


def test_attachment_is_attached_in_one_thread_only(server, client):
    up = client.upload("notes.txt", "text/plain", TEXT)
    tid, _ = client.create_thread("first", attachments=[up["id"]])
    r = client.call("threads.create", {"input": msg_input("second", attachments=[up["id"]])})
    expect_error(r, 409, "attachment_in_use")
    assert [t["id"] for t in client.list_threads()["data"]] == [tid]
    other, _ = client.create_thread("other")
    before = client.all_items(other)
    r = client.call("threads.add_user_message", {"thread_id": other, "input": msg_input("x", attachments=[up["id"]])})
    expect_error(r, 409, "attachment_in_use")
    assert client.all_items(other) == before


def test_message_attachments_equal_upload_replies(server, client):
    img = client.upload("dot.png", "image/png", PNG)
    pdf = attachment_reply(post_form(client, None, [("file", "paper.pdf", "application/pdf", PDF)]), 201)
    txt = client.upload("notes.txt", "text/plain", TEXT)
    tid, ev = client.create_thread("three files", attachments=[img["id"], pdf["id"], txt["id"]])
    want = unsign([dict(x, thread_id=tid) for x in (img, pdf, txt)])
    assert unsign(ev[1]["item"]["attachments"]) == want
    assert unsign(client.all_items(tid)[0]["attachments"]) == want
    assert unsign(client.get_thread(tid)["items"]["data"][0]["attachments"]) == want


# ------------------------------------------------------------------------------------------
# downloads


@pytest.mark.parametrize("name,mime,data,ctype,disp", [
    ("dot.png", "image/png", PNG, "image/png", "inline"),
    ("photo.jpg", "image/jpeg", JPEG, "image/jpeg", "inline"),
    ("notes.txt", "text/plain", TEXT, "text/plain; charset=utf-8", "attachment"),
    ("paper.pdf", "application/pdf", PDF, "application/pdf", "attachment"),
], ids=["png", "jpeg", "text", "pdf"])
def test_download_headers(server, client, name, mime, data, ctype, disp):
    up = client.upload(name, mime, data)
    r = get(server, up["id"], client.tenant.token)
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"] == ctype
    assert r.headers["Content-Disposition"] == f"{disp}; filename=\"{name}\"; filename*=UTF-8''{name}"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert int(r.headers["Content-Length"]) == len(data)
    h = get(server, up["id"], client.tenant.token, method="HEAD")
    assert h.status_code == 200 and h.content == b""
    assert int(h.headers["Content-Length"]) == len(data)
    for k in ("Content-Type", "Content-Disposition", "X-Content-Type-Options"):
        assert h.headers[k] == r.headers[k], k


def test_download_non_ascii_name(server, client):
    name = "résumé \"final\".txt"
    up = client.upload(name, "text/plain", TEXT)
    r = get(server, up["id"], client.tenant.token)
    assert r.status_code == 200 and r.content == TEXT
    assert r.headers["Content-Disposition"] == ("attachment; filename=\"r_sum_ _final_.txt\"; "
                                                "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt")


@pytest.mark.parametrize("who", ["same-account user", "other-account user"])
def test_download_only_by_owner(server, client, who):
    other = others(server, client)[who]
    up = client.upload("notes.txt", "text/plain", TEXT)
    missing = get(server, nonexistent_id(), other.tenant.token)
    expect_error(missing, 404, "not_found")
    for method in ("GET", "HEAD"):
        r = get(server, up["id"], other.tenant.token, method=method)
        assert r.status_code == 404, (method, r.status_code)
    r = get(server, up["id"], other.tenant.token)
    expect_error(r, 404, "not_found")
    assert r.body == missing.body
    expect_error(get(server, up["id"]), 401, "unauthorized")  # no credentials, no signature
    assert get(server, up["id"], client.tenant.token).content == TEXT


def test_download_before_upload(server, client):
    a = create(client, "dot.png", len(PNG), "image/png")
    expect_error(get(server, a["id"], client.tenant.token), 404, "not_found")
    # its signed preview URL does not reveal anything either
    expect_error(get(server, local(server, a["preview_url"])), 404, "not_found")
    attachment_reply(put(client, a["id"], PNG))
    assert get(server, a["id"], client.tenant.token).content == PNG


def test_large_download_streams_intact(server, client):
    data = b"%PDF-1.7\n" + os.urandom(900 * 1024)
    up = client.upload("big.pdf", "application/pdf", data)
    assert stored(server, up["id"]) == data
    with requests.get(file_url(server, up["id"]), headers=auth(client.tenant.token), stream=True,
                      timeout=HTTP_TIMEOUT) as r:
        assert r.status_code == 200
        assert int(r.headers["Content-Length"]) == len(data)
        got = b"".join(r.iter_content(64 * 1024))
    assert got == data
    # and via multipart direct upload too
    up2 = attachment_reply(direct(client, "big2.pdf", "application/pdf", data), 201)
    assert get(server, up2["id"], client.tenant.token).content == data


# ------------------------------------------------------------------------------------------
# signed preview URLs


def signed(url):
    m = SIGNED_RE.match(url)
    assert m, f"preview_url {url!r} is not signed (?exp=<unix>&sig=<43 chars>)"
    return m


def check_preview(server, url, data=PNG):
    r = get(server, local(server, url))
    assert r.status_code == 200, (url, r.status_code, r.content[:200])
    assert r.content == data
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["Content-Disposition"].startswith("inline")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    return r


def test_preview_urls_are_signed_everywhere(server, client):
    a = create(client, "dot.png", len(PNG), "image/png")
    m = signed(a["preview_url"])
    assert m["base"] == f"{PUBLIC_URL}/chatkit/attachments/{a['id']}"
    assert int(m["exp"]) > time.time()
    up = attachment_reply(put(client, a["id"], PNG))
    urls = {"attachments.create": a["preview_url"], "upload reply": up["preview_url"]}
    tid, ev = client.create_thread("picture", attachments=[a["id"]])
    urls["stream user_message"] = ev[1]["item"]["attachments"][0]["preview_url"]
    urls["threads.get_by_id"] = client.get_thread(tid)["items"]["data"][0]["attachments"][0]["preview_url"]
    urls["items.list"] = client.all_items(tid)[0]["attachments"][0]["preview_url"]
    ev = client.send(tid, "again", attachments=[client.upload("dot2.png", "image/png", PNG)["id"]])
    urls["add_user_message stream"] = ev[0]["item"]["attachments"][0]["preview_url"]
    for where, url in urls.items():
        m = signed(url)
        assert m["base"].startswith(f"{PUBLIC_URL}/chatkit/attachments/atc_"), (where, url)
        check_preview(server, url)


def test_preview_url_tampering(server, client):
    a = client.upload("a.png", "image/png", PNG)
    b = client.upload("b.png", "image/png", PNG)
    url = local(server, a["preview_url"])
    m = signed(url)
    check_preview(server, url)
    base, exp, sig = m["base"], int(m["exp"]), m["sig"]
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
    bad = {
        "tampered sig (first char)": f"{base}?exp={exp}&sig={flipped}",
        "tampered sig (last char)": f"{base}?exp={exp}&sig={sig[:-1]}{'B' if sig[-1] == 'A' else 'A'}",
        "truncated sig": f"{base}?exp={exp}&sig={sig[:-1]}",
        "later exp": f"{base}?exp={exp + 1}&sig={sig}",
        "earlier exp": f"{base}?exp={exp - 1}&sig={sig}",
        "much later exp": f"{base}?exp={exp + 10 ** 6}&sig={sig}",
        "no exp": f"{base}?sig={sig}",
        "other attachment's id": f"{file_url(server, b['id'])}?exp={exp}&sig={sig}",
    }
    for what, u in bad.items():
        r = get(server, u)
        assert r.status_code == 403, (what, r.status_code, r.content[:200])
        expect_error(r, 403, "invalid_signature")
        # a browser with unrelated cookies for the domain sees the same
        expect_error(get(server, u, headers={"Cookie": "theme=dark; _ga=1"}), 403, "invalid_signature")
    # without the signature, the owner's credentials work
    r = get(server, f"{base}", client.tenant.token)
    assert r.status_code == 200 and r.content == PNG
    # and without either, nothing
    expect_error(get(server, base), 401, "unauthorized")
    # B's own URL still works; A's URL is still fine
    check_preview(server, b["preview_url"])
    check_preview(server, url)


def test_preview_url_expires(server_factory):
    srv = server_factory(env={"CHATKIT_PREVIEW_TTL_S": "1"})
    cl = Client(srv, srv.new_tenant())
    up = cl.upload("dot.png", "image/png", PNG)
    url = up["preview_url"]
    m = signed(url)
    exp = int(m["exp"])
    assert time.time() < exp <= time.time() + 5, (exp, time.time())
    check_preview(srv, url)
    time.sleep(max(0.0, exp - time.time()) + 0.3)
    r = get(srv, local(srv, url))
    expect_error(r, 403, "invalid_signature")
    # a fresh read signs it again
    fresh = cl.get_thread(cl.create_thread("x", attachments=[up["id"]])[0])["items"]["data"][0]
    check_preview(srv, fresh["attachments"][0]["preview_url"])


# ------------------------------------------------------------------------------------------
# deletion and the sweep


def test_delete_uploaded_attachment(server, client):
    up = client.upload("dot.png", "image/png", PNG)
    assert stored(server, up["id"]) == PNG
    assert client.ok("attachments.delete", {"attachment_id": up["id"]}) == {}
    wait_until(lambda: stored(server, up["id"]) is None, what="the file removed")
    expect_error(get(server, up["id"], client.tenant.token), 404, "not_found")
    expect_error(get(server, local(server, up["preview_url"])), 404, "not_found")
    expect_error(client.call("attachments.delete", {"attachment_id": up["id"]}), 404, "not_found")
    expect_error(put(client, up["id"], PNG), 404, "not_found")


def test_unattached_uploads_are_swept(server_factory):
    srv = server_factory(env={"CHATKIT_UNATTACHED_TTL_S": "1", "CHATKIT_CLEANUP_INTERVAL_MS": "200"})
    cl = Client(srv, srv.new_tenant())
    attached = cl.upload("kept.png", "image/png", PNG)
    tid, _ = cl.create_thread("keep this", attachments=[attached["id"]])
    loose = cl.upload("loose.txt", "text/plain", TEXT)
    assert stored(srv, loose["id"]) == TEXT

    wait_until(lambda: stored(srv, loose["id"]) is None, timeout=6, what="the unattached file swept")
    expect_error(cl.call("attachments.delete", {"attachment_id": loose["id"]}), 404, "not_found")
    expect_error(get(srv, loose["id"], cl.tenant.token), 404, "not_found")
    r = cl.call("threads.add_user_message", {"thread_id": tid, "input": msg_input("x", attachments=[loose["id"]])})
    expect_error(r, 404, "not_found")

    # the attached one stays (several sweeps later)
    time.sleep(0.5)
    assert stored(srv, attached["id"]) == PNG
    assert get(srv, attached["id"], cl.tenant.token).content == PNG
    assert unsign(cl.all_items(tid)[0]["attachments"]) == unsign([dict(attached, thread_id=tid)])

    # deleting its thread frees it
    assert cl.ok("threads.delete", {"thread_id": tid}) == {}
    wait_until(lambda: stored(srv, attached["id"]) is None, timeout=6, what="the deleted thread's file swept")
    expect_error(get(srv, attached["id"], cl.tenant.token), 404, "not_found")
    expect_error(cl.call("attachments.delete", {"attachment_id": attached["id"]}), 404, "not_found")
