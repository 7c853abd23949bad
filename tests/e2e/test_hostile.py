"""Hostile clients: an expired credential still in the auth cache, log injection through every
client-chosen value the server logs, and deleting a thread while it streams."""

import json
import re
import time

import requests

from conftest import HTTP_TIMEOUT, Client, RawConn, RawStream, build_request, expect_error, msg_input, check_401
from shapes import token

COOKIE = "chatkitd_session"
LOG_LINE_MAX = 2048  # bytes, the newline included


def get_session(server, token=None, cookie=None):
    h = {}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if cookie:
        h["Cookie"] = f"{COOKIE}={cookie}"
    return requests.get(f"{server.url}/chatkit/session", headers=h, timeout=HTTP_TIMEOUT)


def sign_in(server, user_id):
    """A fresh session cookie for user_id (a one-time login link, opened)."""
    out = server.cli("token", "create", "--user", user_id, "--login-url")
    query = out["login_url"].split("?", 1)[1]
    r = requests.get(f"{server.url}/login?{query}", allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 303, f"login → {r.status_code} {r.content[:300]!r}"
    first = r.headers["Set-Cookie"].split(";")[0]
    name, _, value = first.partition("=")
    assert name == COOKIE and value.startswith("cks_"), first
    return value


# ------------------------------------------------------------------------------------------
# defect 5: an expired credential must not live on in the auth cache


def test_expired_token_refused_from_the_cache(server_factory):
    s = server_factory(env={"CHATKIT_AUTH_CACHE_MS": "60000"})
    acct = s.new_account()
    agent = s.new_agent(acct)
    short = s.new_user(acct, agent, ttl="2s")
    unseen = s.new_user(acct, agent, ttl="2s")  # never used before it expires: not cached
    t0 = time.monotonic()  # both tokens expire before t0 + 2 s
    c = Client(s, short)
    assert c.list_threads()["data"] == []  # resolved and cached for a minute
    assert get_session(s, token=short.token).status_code == 200

    time.sleep(max(0.0, 2.3 - (time.monotonic() - t0)))
    r = c.call("threads.list", {})
    body = expect_error(r, 401, "unauthorized")
    assert r.headers.get("WWW-Authenticate") == "Bearer"
    check_401(get_session(s, token=short.token))
    # the same answer as for an expired token the server never cached
    r2 = Client(s, unseen).call("threads.list", {})
    assert expect_error(r2, 401, "unauthorized") == body


def test_expired_session_refused_from_the_cache(server_factory):
    s = server_factory(env={"CHATKIT_AUTH_CACHE_MS": "60000", "CHATKIT_SESSION_TTL_S": "2"})
    t = s.new_tenant()
    cookie = sign_in(s, t.user_id)
    unseen = sign_in(s, t.user_id)
    t0 = time.monotonic()
    assert get_session(s, cookie=cookie).status_code == 200  # cached

    time.sleep(max(0.0, 2.3 - (time.monotonic() - t0)))
    body = check_401(get_session(s, cookie=cookie))
    assert check_401(get_session(s, cookie=unseen)) == body


# ------------------------------------------------------------------------------------------
# defect 6: log injection

FORGED = "ts=2030-01-01T00:00:00.000Z level=error msg=\"FORGED\""
EVIL = "x\n" + FORGED + "\r\n" + FORGED + "\x1b[31mred\x1b[0m \"quoted\" \\ back\x7f\u009b2J end"
HUGE = "A" * 100_000

# one logfmt line: key=value pairs, values bare (no space, no quote) or quoted with \" escapes
LOGFMT = re.compile(r'[A-Za-z_][\w.-]*=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
                    r'(?: [A-Za-z_][\w.-]*=(?:"(?:[^"\\]|\\.)*"|[^\s"]*))*')


def check_log(raw):
    """Every line of a server log is one well-formed logfmt line of at most LOG_LINE_MAX bytes,
    with no control characters and nothing forged."""
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert lines
    for i, b in enumerate(lines):
        assert len(b) + 1 <= LOG_LINE_MAX, f"line {i} has {len(b) + 1} bytes"
        assert not re.search(rb"[\x00-\x1f\x7f]", b), f"control character in line {i}: {b[:300]!r}"
        line = b.decode("utf-8")  # strict
        assert "\u009b" not in line, f"C1 control in line {i}: {line[:300]!r}"
        assert line.startswith("ts="), f"line {i} does not start with ts=: {line[:300]!r}"
        assert LOGFMT.fullmatch(line), f"line {i} is not logfmt: {line[:300]!r}"
        assert not line.startswith(FORGED[:30]), f"forged line {i}: {line[:300]!r}"
    return [b.decode() for b in lines]


def test_log_injection(server_factory):
    s = server_factory(env={"CHATKIT_LOG_LEVEL": "debug", "CHATKIT_DEMO_DELAY_MS": "1"})
    t = s.new_tenant()
    c = Client(s, t)
    tid, _ = c.create_thread("hello")
    start = s.log_size()

    # the request type (refused: unknown), as is and huge
    for typ in (EVIL, EVIL + HUGE, HUGE + EVIL):
        r = c.post_raw(json.dumps({"type": typ, "params": {}}))
        assert r.status_code in (400, 422), r.content[:300]
    # ids in params
    for p in ({"thread_id": EVIL}, {"thread_id": "thr_" + HUGE}):
        assert c.post_raw(json.dumps({"type": "threads.get_by_id", "params": p})).status_code in (400, 404)
    assert c.post_raw(json.dumps({"type": "items.list", "params": {"thread_id": tid, "after": EVIL}})).status_code in (400, 404)
    # a model the agent does not allow (logged, then ignored)
    ev = c.send(tid, "hi", inference_options={"model": EVIL + HUGE})
    assert token(ev[-1]) != "error"
    # a file name and a MIME type
    for name, mime in ((EVIL, "text/plain"), ("a.txt", EVIL), (HUGE, "text/plain")):
        r = c.post_raw(json.dumps({"type": "attachments.create",
                                   "params": {"name": name, "size": 3, "mime_type": mime}}))
        assert r.status_code in (400, 413, 415), r.content[:300]
    # paths and headers: quotes and escapes in the URL, odd header values
    with RawConn(s.port) as conn:
        conn.send(build_request("PUT", '/chatkit/upload/att_"x%0Aforged%1B[31m"', b"abc", {
            "Authorization": f"Bearer {t.token}", "Content-Type": 'text/plain; x="\\"',
            "User-Agent": '"evil" \\ agent', "X-Chatkit-Evil": "a" * 4000}))
        status, _, _ = conn.read_response()
        assert status in (400, 404)
    with RawConn(s.port) as conn:
        conn.send(build_request("GET", "/chatkit/attachments/att_" + "%22\"" * 300, b"",
                                {"Authorization": f"Bearer {t.token}"}))
        status, _, _ = conn.read_response()
        assert status in (400, 404, 414, 431)
    # the server is still fine
    assert c.list_threads()["data"]

    time.sleep(0.2)
    lines = check_log((s.log_path.read_bytes())[start:])
    refused = [ln for ln in lines if 'msg="request refused"' in ln and "type=" in ln]
    assert any("\\x0a" in ln and "\\x1b" in ln for ln in refused), refused[:5]
    assert any(ln.endswith('..."') or '..." ' in ln for ln in refused), "a long value is cut and marked"
    models = [ln for ln in lines if "inference_options.model not allowed" in ln]
    assert models and all('model="x\\x0a' in ln for ln in models), models


# ------------------------------------------------------------------------------------------
# defect 9: deleting a thread while it streams


def n_deltas(events):
    return sum(1 for e in events if token(e) == "delta")


def test_delete_while_streaming(server_factory):
    s = server_factory(env={"CHATKIT_DEMO_DELAY_MS": "100"})
    t = s.new_tenant()
    c = Client(s, t)
    tid, _ = c.create_thread("hello")
    start = s.log_size()
    rs = RawStream(s, t, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("please be slow")})
    try:
        assert rs.status == 200
        rs.wait_for(lambda e: n_deltas(e) >= 2, "two text deltas")
        assert c.clone().ok("threads.delete", {"thread_id": tid}) == {}
        t0 = time.monotonic()
        evs = rs.read_all()  # the stream ends (validated by shapes)
        assert time.monotonic() - t0 < 1.5, "the run was not stopped"
    finally:
        rs.close()
    errs = evs.of("error")
    assert len(errs) == 1, evs.types()
    err = errs[0]
    assert evs[-1] == err, evs.types()
    assert err["allow_retry"] is False, err
    assert "deleted" in err.get("message", ""), err
    assert n_deltas(evs) < 15, "the run went on after the delete"

    expect_error(c.call("threads.get_by_id", {"thread_id": tid}), 404, "not_found")
    time.sleep(0.3)
    # nothing more was stored for it: no item, and the thread did not come back
    expect_error(c.call("items.list", {"thread_id": tid}), 404, "not_found")
    assert tid not in [x["id"] for x in c.list_threads()["data"]]
    log = s.log_tail(start, max_bytes=10 ** 6)
    assert "level=error" not in log, log
    assert re.search(r"level=info .*deleted", log), log
    # the user's next thread works as usual
    tid2, ev = c.create_thread("again")
    assert not ev.of("error")
