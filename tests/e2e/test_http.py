"""HTTP/1.1 behaviour over raw sockets: keep-alive, pipelining, chunked bodies, limits,
timeouts, routes, Date."""

import json
import re

import pytest

import shapes
from conftest import HTTP_DATE_RE, RawConn, build_request, parse_sse
from shapes import DEMO_REPLY, expect_seq

DATE_RE = HTTP_DATE_RE


def chatkit_req(client, body, extra=None, agent=True):
    if not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    h = {"Authorization": f"Bearer {client.tenant.token}", "Content-Type": "application/json"}
    h.update(extra or {})
    path = f"/chatkit?agent_id={client.tenant.agent_id}" if agent else "/chatkit"
    return build_request("POST", path, body, h)


def json_of(status, headers, body, want_status=200):
    assert status == want_status, f"{status} {body[:300]!r}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert DATE_RE.match(headers.get("date", "")), f"Date header {headers.get('date')!r}"
    return shapes.strict_loads(body)


LIST = {"type": "threads.list", "params": {}}


def test_keep_alive(server, client):
    with RawConn(server.port) as c:
        for _ in range(3):
            c.send(chatkit_req(client, LIST))
            status, headers, body = c.read_response()
            shapes.thread_page(json_of(status, headers, body))
            assert headers.get("connection", "").lower() != "close"
        c.send(build_request("GET", "/healthz"))
        status, headers, body = c.read_response()
        assert json_of(status, headers, body) == {"status": "ok"}


def test_pipelining(server, client):
    with RawConn(server.port) as c:
        c.send(chatkit_req(client, LIST) + build_request("GET", "/healthz")
               + chatkit_req(client, {"type": "threads.list", "params": {"limit": 1}})
               + build_request("GET", "/nope"))
        shapes.thread_page(json_of(*c.read_response()))
        assert json_of(*c.read_response()) == {"status": "ok"}
        shapes.thread_page(json_of(*c.read_response()))
        err = json_of(*c.read_response(), want_status=404)
        assert err["code"] == "not_found"


def test_pipelining_after_a_stream(server, client):
    create = {"type": "threads.create",
              "params": {"input": {"content": [{"type": "input_text", "text": "pipelined"}], "attachments": [],
                                   "inference_options": {}}}}
    with RawConn(server.port) as c:
        c.send(chatkit_req(client, create) + build_request("GET", "/healthz") + chatkit_req(client, LIST))
        status, headers, body = c.read_response()
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        ev = parse_sse(body)
        shapes.stream_consistency(ev)
        expect_seq(ev, r"thread.created done:user_message stream_options " + DEMO_REPLY + r" thread.updated")
        assert json_of(*c.read_response()) == {"status": "ok"}
        page = json_of(*c.read_response())
        assert [t["id"] for t in page["data"]] == [ev[0]["thread"]["id"]]


def test_chunked_request_body(server, client):
    body = json.dumps({"type": "threads.list", "params": {"limit": 3}}).encode()
    parts = [body[:5], body[5:17], body[17:]]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    head = (f"POST /chatkit?agent_id={client.tenant.agent_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {client.tenant.token}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    with RawConn(server.port) as c:
        c.send(head)
        for p in parts:  # split across sends too
            c.send(b"%x\r\n%s\r\n" % (len(p), p))
        c.send(b"0\r\n\r\n")
        shapes.thread_page(json_of(*c.read_response()))
        c.send(head + chunked)
        shapes.thread_page(json_of(*c.read_response()))


def test_chunked_body_over_limit(server, client):
    head = (f"POST /chatkit?agent_id={client.tenant.agent_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {client.tenant.token}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"x" * 65536
    with RawConn(server.port) as c:
        c.send(head)
        try:
            for _ in range(20):  # 1.25 MiB
                c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            c.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        err = json_of(*c.read_response(), want_status=413)
        assert err["code"] == "payload_too_large"


def test_content_length_over_limit_rejected_before_body(server, client):
    head = (f"POST /chatkit?agent_id={client.tenant.agent_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {client.tenant.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 5000000\r\n\r\n").encode()
    with RawConn(server.port, timeout=5) as c:
        c.send(head)  # no body is sent: the answer must not wait for it
        err = json_of(*c.read_response(), want_status=413)
        assert err["code"] == "payload_too_large"


def test_404_405_and_date(server, client):
    with RawConn(server.port) as c:
        c.send(build_request("GET", "/definitely/not/here"))
        assert json_of(*c.read_response(), want_status=404)["code"] == "not_found"
    with RawConn(server.port) as c:
        c.send(build_request("GET", "/chatkit", headers={"Authorization": f"Bearer {client.tenant.token}"}))
        assert json_of(*c.read_response(), want_status=405)["code"] == "method_not_allowed"
    with RawConn(server.port) as c:
        c.send(chatkit_req(client, LIST))
        json_of(*c.read_response())


def test_sse_headers_and_framing(server, client):
    create = {"type": "threads.create",
              "params": {"input": {"content": [{"type": "input_text", "text": "line one\nline two"}],
                                   "attachments": [], "inference_options": {}}}}
    with RawConn(server.port) as c:
        c.send(chatkit_req(client, create))
        status, headers, body = c.read_response()
    assert status == 200
    assert headers["content-type"].split(";")[0] == "text/event-stream"
    assert headers["cache-control"] == "no-cache, no-transform"
    assert headers["x-accel-buffering"] == "no"
    assert DATE_RE.match(headers.get("date", ""))
    ev = parse_sse(body)
    assert ev[1]["item"]["content"][0]["text"] == "line one\nline two"
    assert b"line one\\nline two" in body


def test_bad_request_line(server):
    with RawConn(server.port, timeout=5) as c:
        c.send(b"THIS IS NOT HTTP\r\n\r\n")
        closed = c.wait_closed(5)
        assert closed, "server did not close a connection that sent garbage"
        if c.buf:
            assert re.match(rb"^HTTP/1\.[01] 4\d\d ", c.buf), c.buf[:100]
    with RawConn(server.port) as c:
        c.send(build_request("GET", "/healthz"))
        assert c.read_response()[0] == 200


# ---- timeouts ------------------------------------------------------------------------------

@pytest.fixture
def timeout_server(server_factory):
    s = server_factory(env={"CHATKIT_HEADER_TIMEOUT_MS": "300", "CHATKIT_BODY_TIMEOUT_MS": "300",
                            "CHATKIT_IDLE_TIMEOUT_MS": "300", "CHATKIT_DEMO_DELAY_MS": "100"})
    return s, s.client(s.new_tenant())


def closed_with_408_or_nothing(c):
    assert c.wait_closed(3.0), "connection still open 3 s after a 300 ms timeout"
    if c.buf:
        assert re.match(rb"^HTTP/1\.1 408 ", c.buf), f"expected 408 or a bare close, got {c.buf[:200]!r}"


def test_slow_headers(timeout_server):
    s, client = timeout_server
    with RawConn(s.port) as c:
        c.send(b"POST /chatkit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        closed_with_408_or_nothing(c)


def test_slow_body(timeout_server):
    s, client = timeout_server
    with RawConn(s.port) as c:
        c.send(chatkit_req(client, LIST)[:-10])  # headers and most of the body
        closed_with_408_or_nothing(c)


def test_idle_keep_alive_closed(timeout_server):
    s, client = timeout_server
    with RawConn(s.port) as c:
        c.send(chatkit_req(client, LIST))
        shapes.thread_page(json_of(*c.read_response()))
        assert c.wait_closed(3.0), "idle keep-alive connection not closed"
        assert c.buf == b""


def test_streams_outlive_idle_timeout(timeout_server):
    """A ~2 s slow stream is activity, not idleness."""
    s, client = timeout_server
    tid, ev = client.create_thread("slow stream please")
    expect_seq(ev, r"thread.created done:user_message stream_options " + DEMO_REPLY + r" thread.updated")


# ---- more framing --------------------------------------------------------------------------

def test_expect_100_continue(server, client):
    req = chatkit_req(client, LIST, {"Expect": "100-continue"})
    head, body = req.split(b"\r\n\r\n", 1)
    with RawConn(server.port) as c:
        c.send(head + b"\r\n\r\n")
        c.sock.settimeout(1.0)
        try:  # a server may answer 100 Continue first; a client sends the body after ~1 s anyway
            c._fill()
        except OSError:
            pass
        c.sock.settimeout(10)
        c.send(body)
        interim = []
        shapes.thread_page(json_of(*c.read_response(interim)))
        assert interim in ([], [100])


def test_http_1_0(server):
    with RawConn(server.port) as c:
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        status, headers, body = c.read_response()
        assert status == 200 and shapes.strict_loads(body) == {"status": "ok"}
        assert c.wait_closed(3.0), "HTTP/1.0 without keep-alive must be closed after the response"


def test_content_length_and_chunked_together_rejected(server, client):
    body = json.dumps(LIST).encode()
    req = (f"POST /chatkit?agent_id={client.tenant.agent_id} HTTP/1.1\r\nHost: x\r\n"
           f"Authorization: Bearer {client.tenant.token}\r\nContent-Length: {len(body)}\r\n"
           f"Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with RawConn(server.port, timeout=5) as c:
        c.send(req)
        closed = c.wait_closed(3.0)
        assert closed, "an ambiguous request (CL + TE) must end the connection"
        if c.buf:
            assert re.match(rb"^HTTP/1\.1 400 ", c.buf), c.buf[:200]
    with RawConn(server.port) as c:
        c.send(build_request("GET", "/healthz"))
        assert c.read_response()[0] == 200


@pytest.mark.parametrize("what", ["header", "url"])
def test_oversized_head(server, what):
    with RawConn(server.port, timeout=5) as c:
        if what == "header":
            req = build_request("GET", "/healthz", headers={"X-Big": "a" * 20000})
        else:
            req = build_request("GET", "/healthz?" + "a" * 8000)
        try:
            c.send(req)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert c.wait_closed(3.0), "oversized request head must end the connection"
        if c.buf:
            assert re.match(rb"^HTTP/1\.1 (400|413|414|431) ", c.buf), c.buf[:200]
    with RawConn(server.port) as c:
        c.send(build_request("GET", "/healthz"))
        assert c.read_response()[0] == 200


def test_client_abandons_request_body(server, client):
    for _ in range(5):
        with RawConn(server.port) as c:
            c.send(chatkit_req(client, LIST)[:-5])
    with RawConn(server.port) as c:
        c.send(chatkit_req(client, LIST))
        shapes.thread_page(json_of(*c.read_response()))


def test_many_idle_connections(server, client):
    conns = [RawConn(server.port) for _ in range(200)]
    try:
        with RawConn(server.port) as c:
            c.send(chatkit_req(client, LIST))
            shapes.thread_page(json_of(*c.read_response()))
        for c in conns[:20]:
            c.send(build_request("GET", "/healthz"))
        for c in conns[:20]:
            assert c.read_response()[0] == 200
    finally:
        for c in conns:
            c.close()


def test_request_content_type_is_not_required(server, client):
    with RawConn(server.port) as c:
        c.send(chatkit_req(client, LIST, {"Content-Type": "text/plain;charset=UTF-8"}))
        shapes.thread_page(json_of(*c.read_response()))


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_on_chatkit(server, client, method):
    with RawConn(server.port) as c:
        c.send(build_request(method, "/chatkit", b"{}", {"Authorization": f"Bearer {client.tenant.token}",
                                                         "Content-Length": "2"}))
        assert json_of(*c.read_response(), want_status=405)["code"] == "method_not_allowed"


def test_upload_requires_token(server, client):
    att = client.ok("attachments.create", {"name": "a.txt", "size": 5, "mime_type": "text/plain"})
    with RawConn(server.port) as c:
        c.send(build_request("PUT", f"/chatkit/upload/{att['id']}", b"hello"))
        assert json_of(*c.read_response(), want_status=401)["code"] == "unauthorized"
