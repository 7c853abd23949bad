"""Authentication and access control: which routes need credentials, opaque bearer tokens
(expiry, revocation), host-minted HS256 JWTs, login links and the session cookie (Origin check,
logout), CORS and preflights, the hosted-mode client secret, secrets kept out of logs and
`config`, and the per-user rate limits.

JWTs are built here with hmac/hashlib/base64 (no JWT library), so every refusal case is a token
an attacker could really send.
"""

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from conftest import check_401
from conftest import (HTTP_TIMEOUT, Client, RawConn, RawStream, Server, Tenant, build_request, check_response,
                      expect_error, msg_input, run_cli, sanitizer_report)

JWT_SECRET = "e2e-jwt-secret-0123456789abcdef-0123456789abcdef"  # >= 32 bytes
JWT_ISSUER = "https://host.example.test"
JWT_AUDIENCE = "chatkitd-e2e"
CLIENT_SECRET = "cs_test"
ALLOWED = ("https://app.example.com", "http://localhost:3000")
EVIL = "https://evil.example.net"
COOKIE = "chatkitd_session"
SESSION_TTL_S = 2592000  # CHATKIT_SESSION_TTL_S default: the cookie's Max-Age

# One private server for most tests of this module: JWTs (leeway 0, issuer and audience
# checked), CORS allow-list, hosted mode. The auth cache keeps its default (5 s) here so that
# logout is seen to take effect at once despite it; expiry/revocation tests start their own
# server with CHATKIT_AUTH_CACHE_MS=0.
AUTH_ENV = {
    "CHATKIT_JWT_SECRET": JWT_SECRET,
    "CHATKIT_JWT_ISSUER": JWT_ISSUER,
    "CHATKIT_JWT_AUDIENCE": JWT_AUDIENCE,
    "CHATKIT_JWT_LEEWAY_S": "0",
    "CHATKIT_ALLOWED_ORIGINS": ",".join(ALLOWED),
    "CHATKIT_CLIENT_SECRET": CLIENT_SECRET,
    "CHATKIT_DEMO_DELAY_MS": "20",
    "CHATKIT_ALLOWED_MIME_TYPES": "image/*,application/pdf,text/plain",
}

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63fcff1f0000050103008dd1cf4b0000000049454e44ae426082")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """The module's private server (AUTH_ENV)."""
    d = tmp_path_factory.mktemp("auth")
    s = Server(d / "data", env=AUTH_ENV, log_path=d / "server.log").start()
    yield s
    code = s.stop()
    rep = sanitizer_report(s.log_tail(max_bytes=10 ** 7))
    assert not rep, f"sanitizer report in the auth server's log:\n{rep}"
    assert code == 0, f"auth server exit code {code}:\n{s.log_tail()}"


@pytest.fixture
def owner(srv):
    """A fresh tenant (account, demo agent, user with a bearer token) on srv."""
    return srv.client(srv.new_tenant())


# ------------------------------------------------------------------------------------------
# helpers


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(claims, secret=JWT_SECRET, header=None, digest=hashlib.sha256, signature=None):
    """A compact JWS: header.payload.signature, HMAC-signed with `digest` unless `signature`
    (a string, possibly empty) is given."""
    h = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    signing = (b64u(json.dumps(h, separators=(",", ":")).encode()) + "."
               + b64u(json.dumps(claims, separators=(",", ":")).encode()))
    if signature is None:
        key = secret.encode() if isinstance(secret, str) else secret
        signature = b64u(hmac.new(key, signing.encode(), digest).digest())
    return signing + "." + signature


def claims_for(account, sub=None, ttl=300, **extra):
    now = int(time.time())
    c = {"sub": sub or f"host-user-{uuid.uuid4().hex[:8]}", "account": account, "name": "Host User",
         "exp": now + ttl, "iat": now, "iss": JWT_ISSUER, "aud": JWT_AUDIENCE}
    for k, v in extra.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def jwt_client(server, tenant, token):
    """A Client that authenticates with `token` (a JWT) for tenant's agent."""
    return Client(server, Tenant(account_id=tenant.account_id, user_id="", agent_id=tenant.agent_id, token=token))


def post(server, req_type, params, token=None, cookie=None, agent=None, headers=None):
    """POST /chatkit with a bearer token and/or a session cookie → validated response."""
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if cookie:
        h["Cookie"] = f"{COOKIE}={cookie}"
    h.update(headers or {})
    url = server.endpoint + (f"?agent_id={agent}" if agent else "")
    r = requests.post(url, data=json.dumps({"type": req_type, "params": params}), headers=h,
                      timeout=HTTP_TIMEOUT)
    return check_response(r, req_type, params)


def get_session(server, token=None, cookie=None, headers=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if cookie:
        h["Cookie"] = f"{COOKIE}={cookie}"
    return requests.get(f"{server.url}/chatkit/session", headers=h, timeout=HTTP_TIMEOUT)


def session_info(server, **kw):
    r = get_session(server, **kw)
    assert r.status_code == 200, f"GET /chatkit/session → {r.status_code} {r.content[:300]!r}"
    assert r.headers["Content-Type"].startswith("application/json")
    s = r.json()
    assert set(s) == {"account_id", "user_id", "agents"}, s
    for a in s["agents"]:
        assert set(a) == {"id", "name"} and a["id"].startswith("agt_"), a
    return s


def local_url(server, url):
    """url (printed by the CLI, with its default listen address or a public URL) on server."""
    u = urlsplit(url)
    return f"{server.url}{u.path}" + (f"?{u.query}" if u.query else "")


def login_link(server, user_id, env=None):
    out = server.cli("token", "create", "--user", user_id, "--login-url", env=env)
    assert set(out) == {"login_url", "user_id", "expires_in_s"}, out
    assert out["user_id"] == user_id
    u = urlsplit(out["login_url"])
    assert u.scheme == "http" and u.path == "/login" and re.fullmatch(r"token=ckl_[A-Za-z0-9_-]{43}", u.query), out
    return local_url(server, out["login_url"]), out


def open_link(url):
    return requests.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)


def set_cookie_of(resp):
    """(value, attributes) of the chatkitd_session Set-Cookie header."""
    sc = resp.headers.get("Set-Cookie")
    assert sc, f"no Set-Cookie in {dict(resp.headers)}"
    first, *attrs = [p.strip() for p in sc.split(";")]
    name, _, value = first.partition("=")
    assert name == COOKIE, sc
    return value, attrs


def sign_in(server, user_id):
    """Opens a fresh login link → the session cookie's value."""
    url, _ = login_link(server, user_id)
    r = open_link(url)
    assert r.status_code == 303, f"login → {r.status_code} {r.content[:300]!r}"
    value, _ = set_cookie_of(r)
    assert value.startswith("cks_"), value
    return value


def cors_headers_ok(resp, origin):
    h = resp.headers
    assert h.get("Access-Control-Allow-Origin") == origin, dict(h)
    assert h.get("Access-Control-Allow-Credentials") == "true", dict(h)
    assert "origin" in [v.strip().lower() for v in h.get("Vary", "").split(",")], dict(h)


def no_cors(resp):
    assert "Access-Control-Allow-Origin" not in resp.headers, dict(resp.headers)
    assert "Access-Control-Allow-Credentials" not in resp.headers, dict(resp.headers)


# ------------------------------------------------------------------------------------------
# which routes need credentials


def test_public_routes_need_no_credentials(srv):
    for path in ("/healthz", "/readyz"):
        r = requests.get(srv.url + path, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200 and r.json() == {"status": "ok"}, (path, r.status_code, r.text)
    r = requests.get(srv.url + "/", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), r.headers
    assert "WWW-Authenticate" not in r.headers
    assert requests.head(srv.url + "/", timeout=HTTP_TIMEOUT).status_code == 200


def _protected(srv, tenant, att_id):
    u = srv.url
    mp = {"files": {"file": ("a.txt", b"abc", "text/plain")}}
    return [
        ("POST /chatkit", lambda h: requests.post(f"{srv.endpoint}?agent_id={tenant.agent_id}", headers=dict(
            h, **{"Content-Type": "application/json"}), data=json.dumps({"type": "threads.list", "params": {}}),
            timeout=HTTP_TIMEOUT)),
        ("PUT /chatkit/upload/<id>", lambda h: requests.put(f"{u}/chatkit/upload/{att_id}", headers=h,
                                                            data=b"abc", timeout=HTTP_TIMEOUT)),
        ("POST /chatkit/upload/<id>", lambda h: requests.post(f"{u}/chatkit/upload/{att_id}", headers=h,
                                                              timeout=HTTP_TIMEOUT, **mp)),
        ("POST /chatkit/upload", lambda h: requests.post(f"{u}/chatkit/upload?agent_id={tenant.agent_id}",
                                                         headers=h, timeout=HTTP_TIMEOUT, **mp)),
        ("GET /chatkit/attachments/<id>", lambda h: requests.get(f"{u}/chatkit/attachments/{att_id}",
                                                                 headers=h, timeout=HTTP_TIMEOUT)),
        ("HEAD /chatkit/attachments/<id>", lambda h: requests.head(f"{u}/chatkit/attachments/{att_id}",
                                                                   headers=h, timeout=HTTP_TIMEOUT)),
        ("POST /chatkit/client_secret", lambda h: requests.post(f"{u}/chatkit/client_secret", headers=h,
                                                                timeout=HTTP_TIMEOUT)),
        ("GET /chatkit/session", lambda h: requests.get(f"{u}/chatkit/session", headers=h, timeout=HTTP_TIMEOUT)),
        ("GET /metrics", lambda h: requests.get(f"{u}/metrics", headers=h, timeout=HTTP_TIMEOUT)),
    ]


BAD_CREDENTIALS = {
    "none": {},
    "wrong token": {"Authorization": "Bearer ckt_" + "A" * 43},
    "garbage token": {"Authorization": "Bearer not-a-token"},
    "overlong token": {"Authorization": "Bearer ckt_" + "A" * 200},
    "empty bearer": {"Authorization": "Bearer "},
    "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "unknown cookie": {"Cookie": f"{COOKIE}=cks_" + "B" * 43},
    "other cookie only": {"Cookie": "theme=dark"},
}


@pytest.mark.parametrize("cred", list(BAD_CREDENTIALS))
def test_protected_routes_refuse_bad_credentials(srv, owner, cred):
    t = owner.tenant
    att = owner.ok("attachments.create", {"name": "a.txt", "size": 3, "mime_type": "text/plain"})
    for name, call in _protected(srv, t, att["id"]):
        r = call(dict(BAD_CREDENTIALS[cred]))
        assert r.status_code == 401, f"{name} with {cred}: {r.status_code} {r.content[:200]!r}"
        assert r.headers.get("WWW-Authenticate") == "Bearer", (name, dict(r.headers))
        if not name.startswith("HEAD"):
            body = r.json()
            assert body["code"] == "unauthorized" and body["error"], (name, body)
            assert set(body) == {"error", "code"}
    # nothing happened: the attachment is still waiting for its bytes, no file was stored
    r = owner.put_bytes(att["id"], b"abc")
    assert r.status_code == 200, r.text
    assert owner.list_threads()["data"] == []


def test_protected_routes_accept_a_token(srv, owner):
    t = owner.tenant
    s = session_info(srv, token=t.token)
    assert s["account_id"] == t.account_id and s["user_id"] == t.user_id
    assert [a["id"] for a in s["agents"]] == [t.agent_id]
    r = requests.get(f"{srv.url}/metrics", headers=owner.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and "chatkitd_requests_total" in r.text
    img = owner.upload("cat.png", "image/png", PNG)
    r = requests.get(f"{srv.url}/chatkit/attachments/{img['id']}", headers=owner.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.content == PNG


def test_signed_attachment_url_needs_no_credentials_but_a_bad_one_does(srv, owner):
    img = owner.upload("cat.png", "image/png", PNG)
    signed = local_url(srv, img["preview_url"])
    assert "sig=" in signed and "exp=" in signed
    r = requests.get(signed, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.content == PNG
    # a bad signature without credentials: refused, never served
    bad = re.sub(r"sig=[A-Za-z0-9_-]+", "sig=" + "A" * 43, signed)
    r = requests.get(bad, timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and r.json()["code"] == "invalid_signature", r.text
    # no query at all: the credentials route → 401
    r = requests.get(signed.split("?")[0], timeout=HTTP_TIMEOUT)
    check_401(r)


# ------------------------------------------------------------------------------------------
# opaque bearer tokens


def test_token_expiry_and_revocation(server_factory):
    s = server_factory(env={"CHATKIT_AUTH_CACHE_MS": "0"})
    acct = s.new_account()
    agent = s.new_agent(acct)
    short = s.new_user(acct, agent, ttl="1s")
    keep = s.new_user(acct, agent)
    doomed = s.new_user(acct, agent)
    assert short.token.startswith("ckt_") and re.fullmatch(r"ckt_[A-Za-z0-9_-]{43}", keep.token)
    t0 = time.monotonic()
    for t in (short, keep, doomed):
        assert Client(s, t).list_threads()["data"] == []

    out = s.cli("token", "revoke", doomed.token)
    assert out == {"revoked": True}
    expect_error(Client(s, doomed).call("threads.list", {}), 401, "unauthorized")
    check_401(get_session(s, token=doomed.token))
    # revoking again is fine, and does not bring it back
    s.cli("token", "revoke", doomed.token)
    expect_error(Client(s, doomed).call("threads.list", {}), 401, "unauthorized")

    time.sleep(max(0.0, 1.3 - (time.monotonic() - t0)))
    r = Client(s, short).call("threads.list", {})
    expect_error(r, 401, "unauthorized")
    assert r.headers.get("WWW-Authenticate") == "Bearer"
    check_401(get_session(s, token=short.token))
    # the other tokens of the account are untouched
    assert Client(s, keep).list_threads()["data"] == []
    # a new token for the same user works
    fresh = s.cli("token", "create", "--user", short.user_id)["token"]
    assert session_info(s, token=fresh)["user_id"] == short.user_id


def test_token_kinds_and_wrong_tokens(srv, owner):
    t = owner.tenant
    for bad in (t.token + "x", t.token[:-1], t.token.replace("ckt_", "cks_"), "ckt_", t.token.lower()):
        if bad == t.token:
            continue
        check_401(get_session(srv, token=bad))
    # lower-case scheme is accepted (RFC 7235: the scheme is case-insensitive)
    r = requests.get(f"{srv.url}/chatkit/session", headers={"Authorization": f"bearer {t.token}"},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    # an API token is not a cookie
    check_401(get_session(srv, cookie=t.token))
    expect_error(post(srv, "threads.list", {}, cookie=t.token, agent=t.agent_id), 401, "unauthorized")


# ------------------------------------------------------------------------------------------
# JWTs


def test_jwt_signs_in_and_creates_the_user_once(srv, owner):
    t = owner.tenant
    sub = f"host-{uuid.uuid4().hex[:8]}"
    tok1 = make_jwt(claims_for(t.account_id, sub=sub, name="Ada"))
    c1 = jwt_client(srv, t, tok1)
    s1 = session_info(srv, token=tok1)
    assert s1["account_id"] == t.account_id and s1["user_id"].startswith("usr_")
    assert s1["user_id"] != t.user_id
    assert [a["id"] for a in s1["agents"]] == [t.agent_id]
    tid, ev = c1.create_thread("hello from a JWT user")
    assert c1.all_items(tid)[0]["content"][0]["text"] == "hello from a JWT user"

    # another token for the same sub (other exp, other name, no iat): the same user
    tok2 = make_jwt(claims_for(t.account_id, sub=sub, ttl=600, name="Ada L.", iat=None))
    assert tok2 != tok1
    c2 = jwt_client(srv, t, tok2)
    assert session_info(srv, token=tok2)["user_id"] == s1["user_id"]
    assert [x["id"] for x in c2.list_threads()["data"]] == [tid]
    assert c2.get_thread(tid)["id"] == tid

    # a different sub is another user: sees nothing
    tok3 = make_jwt(claims_for(t.account_id, sub=sub + "-2"))
    c3 = jwt_client(srv, t, tok3)
    s3 = session_info(srv, token=tok3)
    assert s3["user_id"] not in (s1["user_id"], t.user_id) and s3["account_id"] == t.account_id
    assert c3.list_threads()["data"] == []
    expect_error(c3.call("threads.get_by_id", {"thread_id": tid}), 404, "not_found")
    # the token-created user of the account sees nothing of the JWT user's either
    assert owner.list_threads()["data"] == []

    # the same sub in another account is yet another user
    other = srv.new_tenant()
    tok4 = make_jwt(claims_for(other.account_id, sub=sub))
    s4 = session_info(srv, token=tok4)
    assert s4["account_id"] == other.account_id and s4["user_id"] not in (s1["user_id"], s3["user_id"])
    c4 = jwt_client(srv, other, tok4)
    assert c4.list_threads()["data"] == []
    expect_error(c4.call("threads.get_by_id", {"thread_id": tid}), 404, "not_found")


def test_jwt_first_sight_concurrently_creates_one_user(srv, owner):
    """Several requests of a new sub at once (different tokens: no cache hit) → one user."""
    t = owner.tenant
    sub = "race-" + uuid.uuid4().hex[:8]
    toks = [make_jwt(claims_for(t.account_id, sub=sub, ttl=300 + i)) for i in range(6)]
    conns = [RawConn(srv.port) for _ in toks]
    try:
        for c, tok in zip(conns, toks):
            c.send(build_request("GET", "/chatkit/session", b"", {"Authorization": f"Bearer {tok}"}))
        users = set()
        for c in conns:
            status, _, body = c.read_response()
            assert status == 200, body
            users.add(json.loads(body)["user_id"])
    finally:
        for c in conns:
            c.close()
    assert len(users) == 1
    assert session_info(srv, token=make_jwt(claims_for(t.account_id, sub=sub)))["user_id"] in users


def test_jwt_account_by_external_id(srv):
    ext = f"org-{uuid.uuid4().hex[:10]}"
    acct = srv.cli("account", "create", "Host Org", "--external-id", ext)
    assert acct["external_id"] == ext and acct["id"].startswith("acct_")
    agent = srv.new_agent(acct["id"], name="Support")
    tok = make_jwt(claims_for(ext))
    s = session_info(srv, token=tok)
    assert s["account_id"] == acct["id"]
    assert s["agents"] == [{"id": agent, "name": "Support"}]
    c = jwt_client(srv, Tenant(acct["id"], "", agent, tok), tok)
    tid, _ = c.create_thread("via external id")
    # the internal id names the same account, and the same sub is the same user there
    tok_id = make_jwt(claims_for(acct["id"], sub=json.loads(base64.urlsafe_b64decode(
        tok.split(".")[1] + "==").decode())["sub"]))
    assert session_info(srv, token=tok_id)["user_id"] == s["user_id"]
    assert [x["id"] for x in jwt_client(srv, c.tenant, tok_id).list_threads()["data"]] == [tid]
    # an external id cannot be taken twice
    cp = srv.cli("account", "create", "Dup", "--external-id", ext, check=False)
    assert cp.returncode != 0


def test_jwt_integer_account_claim(srv):
    ext = str(int(time.time() * 1000) % 10 ** 9 + 10 ** 9)
    acct = srv.cli("account", "create", "Numeric Org", "--external-id", ext)
    srv.new_agent(acct["id"])
    tok = make_jwt(claims_for(int(ext)))
    assert session_info(srv, token=tok)["account_id"] == acct["id"]


def test_jwt_agent_must_belong_to_the_account(srv, owner):
    other = srv.new_tenant()
    tok = make_jwt(claims_for(owner.tenant.account_id))
    c = jwt_client(srv, owner.tenant, tok)
    expect_error(c.call("threads.list", {}, agent=other.agent_id), 422, "agent_required")
    expect_error(c.call("threads.create", {"input": msg_input("hi")}, agent=other.agent_id), 422, "agent_required")
    expect_error(c.call("threads.list", {}, agent="agt_" + "0" * 35), 422, "agent_required")
    assert c.list_threads()["data"] == []
    c.create_thread("own agent is fine")
    # the other account's user sees nothing of it
    assert Client(srv, other).list_threads()["data"] == []


def test_jwt_audience_may_be_a_list_and_typ_is_optional(srv, owner):
    a = owner.tenant.account_id
    tok = make_jwt(claims_for(a, aud=["something-else", JWT_AUDIENCE]), header={"alg": "HS256"})
    assert session_info(srv, token=tok)["account_id"] == a


def _now():
    return int(time.time())


def without(claims, key):
    return {k: v for k, v in claims.items() if k != key}


def _resign(header_b64, payload_b64, secret=JWT_SECRET):
    signing = header_b64 + "." + payload_b64
    return signing + "." + b64u(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())


HS256_HEADER = b64u(b'{"alg":"HS256","typ":"JWT"}')

# name → (token builder, the reason the server logs, None when the token never reaches the JWT
# verifier: not three parts, so an opaque token; or a valid JWT of an unknown account)
JWT_REFUSALS = {
    "expired": (lambda a: make_jwt(claims_for(a, exp=_now() - 5)), "token expired"),
    "expired long ago": (lambda a: make_jwt(claims_for(a, exp=1000000000)), "token expired"),
    "nbf in the future": (lambda a: make_jwt(claims_for(a, nbf=_now() + 120)), "(nbf)"),
    "iat in the future": (lambda a: make_jwt(claims_for(a, iat=_now() + 120)), "(iat)"),
    "wrong signature": (lambda a: make_jwt(claims_for(a), secret="another-secret-0123456789abcdef-0123456789"),
                        "signature mismatch"),
    "tampered payload": (lambda a: (lambda good: ".".join([good.split(".")[0], b64u(json.dumps(
        claims_for(a, sub="admin")).encode()), good.split(".")[2]]))(make_jwt(claims_for(a))), "signature mismatch"),
    "alg none, empty signature": (lambda a: make_jwt(claims_for(a), header={"alg": "none", "typ": "JWT"},
                                                     signature=""), "signature: wrong length"),
    "alg none, HMAC signature": (lambda a: make_jwt(claims_for(a), header={"alg": "none", "typ": "JWT"}),
                                 "alg must be HS256"),
    "alg HS512": (lambda a: make_jwt(claims_for(a), header={"alg": "HS512", "typ": "JWT"}, digest=hashlib.sha512),
                  "signature: wrong length"),
    "alg HS512, 32-byte signature": (lambda a: make_jwt(claims_for(a), header={"alg": "HS512", "typ": "JWT"}),
                                     "alg must be HS256"),
    "alg HS384": (lambda a: make_jwt(claims_for(a), header={"alg": "HS384", "typ": "JWT"}, digest=hashlib.sha384),
                  "signature: wrong length"),
    "alg RS256 signed with the secret": (lambda a: make_jwt(claims_for(a), header={"alg": "RS256", "typ": "JWT"}),
                                         "alg must be HS256"),
    "alg lower-case hs256": (lambda a: make_jwt(claims_for(a), header={"alg": "hs256", "typ": "JWT"}),
                             "alg must be HS256"),
    "no alg": (lambda a: make_jwt(claims_for(a), header={"typ": "JWT"}), "alg must be HS256"),
    "typ JWE": (lambda a: make_jwt(claims_for(a), header={"alg": "HS256", "typ": "JWE"}), "typ must be JWT"),
    "crit header": (lambda a: make_jwt(claims_for(a), header={"alg": "HS256", "typ": "JWT", "crit": ["exp"]}),
                    "crit not supported"),
    "wrong iss": (lambda a: make_jwt(claims_for(a, iss="https://evil.example.net")), "issuer mismatch"),
    "missing iss": (lambda a: make_jwt(claims_for(a, iss=None)), "issuer mismatch"),
    "wrong aud": (lambda a: make_jwt(claims_for(a, aud="someone-else")), "audience mismatch"),
    "aud list without ours": (lambda a: make_jwt(claims_for(a, aud=["a", "b"])), "audience mismatch"),
    "missing aud": (lambda a: make_jwt(claims_for(a, aud=None)), "audience mismatch"),
    "missing exp": (lambda a: make_jwt(claims_for(a, exp=None)), "exp missing"),
    "exp as a string": (lambda a: make_jwt(claims_for(a, exp=str(_now() + 300))), "must be numbers"),
    "missing sub": (lambda a: make_jwt(without(claims_for(a), "sub")), "sub missing"),
    "empty sub": (lambda a: make_jwt(dict(claims_for(a), sub="")), "sub must be"),
    "sub not a string": (lambda a: make_jwt(dict(claims_for(a), sub=42)), "sub must be"),
    "sub with a control character": (lambda a: make_jwt(dict(claims_for(a), sub="a\nb")), "sub must be"),
    "missing account": (lambda a: make_jwt(without(claims_for(a), "account")), "account missing"),
    "account not a string": (lambda a: make_jwt(dict(claims_for(a), account=True)), "account must be"),
    "unknown account": (lambda a: make_jwt(claims_for("acct_" + "0" * 35)), None),
    "unknown external account": (lambda a: make_jwt(claims_for(f"no-such-org-{uuid.uuid4().hex}")), None),
    "two parts": (lambda a: ".".join(make_jwt(claims_for(a)).split(".")[:2]), None),
    "four parts": (lambda a: make_jwt(claims_for(a)) + ".AAAA", None),
    "padded base64": (lambda a: (lambda p: p[0] + "==." + p[1] + "." + p[2])(make_jwt(claims_for(a)).split(".")),
                      "outside base64url"),
    "garbage": (lambda a: "abc.def.ghi", "signature: wrong length"),
    "payload not JSON": (lambda a: _resign(HS256_HEADER, b64u(b"not json")), "not a JSON object"),
    "duplicate sub claim": (lambda a: _resign(HS256_HEADER, b64u(
        ('{"sub":"a","sub":"b","account":"%s","exp":%d,"iss":"%s","aud":"%s"}'
         % (a, _now() + 300, JWT_ISSUER, JWT_AUDIENCE)).encode())), "not a JSON object"),
}


@pytest.mark.parametrize("case", list(JWT_REFUSALS))
def test_jwt_refused(srv, owner, case):
    t = owner.tenant
    build, reason = JWT_REFUSALS[case]
    tok = build(t.account_id)
    c = jwt_client(srv, t, tok)
    off = srv.log_size()
    r = c.call("threads.list", {})
    expect_error(r, 401, "unauthorized")
    # refused for the reason the case is about (the log says why; the client is not told)
    refused = [ln for ln in srv.log_tail(off).splitlines() if 'msg="JWT refused"' in ln]
    if reason:
        assert len(refused) == 1 and reason in refused[0], refused
    else:
        assert not refused, refused
    assert r.headers.get("WWW-Authenticate") == "Bearer"
    check_401(get_session(srv, token=tok))
    r = c.call("threads.create", {"input": msg_input("must not run")})
    expect_error(r, 401, "unauthorized")


def test_jwt_refusal_cases_are_otherwise_valid(srv, owner):
    """The refusal table above starts from claims_for(): that token itself is accepted."""
    t = owner.tenant
    assert session_info(srv, token=make_jwt(claims_for(t.account_id)))["account_id"] == t.account_id


def test_jwt_expires_even_when_cached(srv, owner):
    t = owner.tenant
    exp = _now() + 2
    tok = make_jwt(claims_for(t.account_id, exp=exp))
    c = jwt_client(srv, t, tok)
    assert c.list_threads()["data"] == []
    time.sleep(max(0.0, exp - time.time() + 0.2))
    r = c.call("threads.list", {})
    expect_error(r, 401, "unauthorized")
    assert "expired" in r.body["error"]


def test_jwt_without_server_secret(server, client):
    """The shared server has no CHATKIT_JWT_SECRET: a JWT, even a well-formed one, is refused."""
    t = client.tenant
    tok = make_jwt(claims_for(t.account_id))
    c = jwt_client(server, t, tok)
    expect_error(c.call("threads.list", {}), 401, "unauthorized")
    check_401(get_session(server, token=tok))


def test_jwt_as_cookie_is_refused(srv, owner):
    tok = make_jwt(claims_for(owner.tenant.account_id))
    check_401(get_session(srv, cookie=tok))


def test_short_jwt_secret_is_a_config_error():
    cp = run_cli(["config"], env={"CHATKIT_JWT_SECRET": "too-short"}, check=False, want_json=False)
    assert cp.returncode != 0
    assert b"CHATKIT_JWT_SECRET" in cp.stderr
    assert b"too-short" not in cp.stderr + cp.stdout


# ------------------------------------------------------------------------------------------
# login links and the session cookie


def test_login_link_sets_the_session_cookie(srv, owner):
    t = owner.tenant
    url, out = login_link(srv, t.user_id)
    assert out["expires_in_s"] == 900
    r = open_link(url)
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == "/"
    assert r.headers.get("Cache-Control") == "no-store"
    value, attrs = set_cookie_of(r)
    assert re.fullmatch(r"cks_[A-Za-z0-9_-]{43}", value), value
    assert attrs == ["Path=/", f"Max-Age={SESSION_TTL_S}", "HttpOnly", "SameSite=Lax"], attrs
    assert value not in r.text

    # the link works once
    r2 = open_link(url)
    assert r2.status_code == 401 and r2.json()["code"] == "invalid_login_link", r2.text
    assert "Set-Cookie" not in r2.headers

    # the cookie authenticates the session endpoint and /chatkit
    s = session_info(srv, cookie=value)
    assert s["account_id"] == t.account_id and s["user_id"] == t.user_id
    assert s["agents"] == [{"id": t.agent_id, "name": "helper"}]
    assert post(srv, "threads.list", {}, cookie=value, agent=t.agent_id).body["data"] == []
    r = post(srv, "threads.create", {"input": msg_input("hello via cookie")}, cookie=value, agent=t.agent_id)
    assert r.status_code == 200 and r.events is not None, r.content[:300]
    tid = r.events[0]["thread"]["id"]
    # the same user as the bearer token's
    assert [x["id"] for x in owner.list_threads()["data"]] == [tid]
    # and the attachment routes (a browser loads images with its cookie)
    img = owner.upload("cat.png", "image/png", PNG)
    r = requests.get(f"{srv.url}/chatkit/attachments/{img['id']}", headers={"Cookie": f"{COOKIE}={value}"},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.content == PNG


def test_login_link_is_single_use_under_concurrency(srv, owner):
    url, _ = login_link(srv, owner.tenant.user_id)
    results = []
    barrier = threading.Barrier(8)

    def go():
        barrier.wait()
        r = open_link(url)
        results.append((r.status_code, r.headers.get("Set-Cookie")))

    ths = [threading.Thread(target=go) for _ in range(8)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(30)
    assert len(results) == 8
    assert sorted(s for s, _ in results) == [303] + [401] * 7, results
    assert all((sc is None) == (s == 401) for s, sc in results)


def test_login_link_errors(srv, owner):
    for q in ("", "?token=", "?token=ckl_" + "A" * 43, "?other=1"):
        r = open_link(f"{srv.url}/login{q}")
        assert r.status_code == 401 and r.json()["code"] == "invalid_login_link", (q, r.text)
        assert "Set-Cookie" not in r.headers
    url, _ = login_link(srv, owner.tenant.user_id)
    r = requests.post(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 405, r.text
    # a refused method does not use the link up
    assert open_link(url).status_code == 303


def test_login_link_expires(srv, owner):
    env = {"CHATKIT_LOGIN_TTL_S": "1"}
    url, out = login_link(srv, owner.tenant.user_id, env=env)
    assert out["expires_in_s"] == 1
    control, _ = login_link(srv, owner.tenant.user_id, env=env)
    t0 = time.monotonic()
    assert open_link(control).status_code == 303  # a 1 s link works while fresh
    time.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))
    r = open_link(url)
    assert r.status_code == 401 and r.json()["code"] == "invalid_login_link", r.text
    assert "Set-Cookie" not in r.headers


def test_credential_kinds_are_separate(srv, owner):
    t = owner.tenant
    session = sign_in(srv, t.user_id)
    # the session value as a bearer token
    check_401(get_session(srv, token=session))
    expect_error(post(srv, "threads.list", {}, token=session, agent=t.agent_id), 401, "unauthorized")
    # a bearer token in the cookie
    check_401(get_session(srv, cookie=t.token))
    # an unused login token as a bearer token or a cookie: refused, and the link still works
    url, _ = login_link(srv, t.user_id)
    login_tok = url.split("token=", 1)[1]
    check_401(get_session(srv, token=login_tok))
    check_401(get_session(srv, cookie=login_tok))
    assert open_link(url).status_code == 303
    # an API token is not a login link, and trying does not revoke it
    r = open_link(f"{srv.url}/login?token={t.token}")
    assert r.status_code == 401 and r.json()["code"] == "invalid_login_link"
    assert session_info(srv, token=t.token)["user_id"] == t.user_id
    # a session value is not a login link either
    r = open_link(f"{srv.url}/login?token={session}")
    assert r.status_code == 401 and r.json()["code"] == "invalid_login_link"
    assert session_info(srv, cookie=session)["user_id"] == t.user_id
    # with both a (bad) bearer token and a good cookie, the bearer token decides
    check_401(get_session(srv, token="ckt_" + "Z" * 43, cookie=session))


def test_cookie_origin_check(srv, owner):
    t = owner.tenant
    session = sign_in(srv, t.user_id)
    for origin in (EVIL, "null", f"http://127.0.0.1:{srv.port + 1 if srv.port < 65535 else 1}",
                   f"http://localhost:{srv.port}", "https://app.example.com.evil.net"):
        r = post(srv, "threads.create", {"input": msg_input("csrf")}, cookie=session, agent=t.agent_id,
                 headers={"Origin": origin})
        expect_error(r, 403, "forbidden_origin")
    # a cross-site upload with the cookie is refused too, and uses nothing up
    att = owner.ok("attachments.create", {"name": "a.txt", "size": 3, "mime_type": "text/plain"})
    r = requests.put(f"{srv.url}/chatkit/upload/{att['id']}", data=b"abc",
                     headers={"Cookie": f"{COOKIE}={session}", "Origin": EVIL}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and r.json()["code"] == "forbidden_origin", r.text
    assert owner.list_threads()["data"] == []

    # same origin as the Host, an allowed origin, or no Origin at all: fine
    assert post(srv, "threads.list", {}, cookie=session, agent=t.agent_id,
                headers={"Origin": srv.url}).status_code == 200
    r = post(srv, "threads.list", {}, cookie=session, agent=t.agent_id, headers={"Origin": ALLOWED[0]})
    assert r.status_code == 200
    cors_headers_ok(r, ALLOWED[0])
    assert post(srv, "threads.list", {}, cookie=session, agent=t.agent_id).status_code == 200
    r = requests.put(f"{srv.url}/chatkit/upload/{att['id']}", data=b"abc",
                     headers={"Cookie": f"{COOKIE}={session}", "Origin": srv.url}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    # reads are not refused (the browser withholds the answer without CORS headers)
    r = get_session(srv, cookie=session, headers={"Origin": EVIL})
    assert r.status_code == 200
    no_cors(r)
    # a bearer token is not ambient: another Origin is no CSRF risk, only no CORS headers
    r = post(srv, "threads.list", {}, token=t.token, agent=t.agent_id, headers={"Origin": EVIL})
    assert r.status_code == 200
    no_cors(r)


def test_logout(srv, owner):
    t = owner.tenant
    session = sign_in(srv, t.user_id)
    other = sign_in(srv, t.user_id)  # a second browser of the same user
    assert session != other
    assert session_info(srv, cookie=session)["user_id"] == t.user_id  # now cached (5 s)

    # a cross-site logout is refused
    r = requests.post(f"{srv.url}/logout", headers={"Cookie": f"{COOKIE}={session}", "Origin": EVIL},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and r.json()["code"] == "forbidden_origin"
    assert session_info(srv, cookie=session)["user_id"] == t.user_id

    r = requests.post(f"{srv.url}/logout", headers={"Cookie": f"{COOKIE}={session}", "Origin": srv.url},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 204, r.text
    assert r.content == b""
    value, attrs = set_cookie_of(r)
    assert value == "" and "Max-Age=0" in attrs and "Path=/" in attrs and "HttpOnly" in attrs, attrs
    # at once, despite the auth cache
    check_401(get_session(srv, cookie=session))
    expect_error(post(srv, "threads.list", {}, cookie=session, agent=t.agent_id), 401, "unauthorized")
    # the other session and the bearer token are untouched
    assert session_info(srv, cookie=other)["user_id"] == t.user_id
    assert session_info(srv, token=t.token)["user_id"] == t.user_id
    # logging out again, or without a cookie: 204 and the cookie cleared
    for h in ({"Cookie": f"{COOKIE}={session}"}, {}):
        r = requests.post(f"{srv.url}/logout", headers=h, timeout=HTTP_TIMEOUT)
        assert r.status_code == 204
        assert set_cookie_of(r)[0] == ""
    r = requests.get(f"{srv.url}/logout", timeout=HTTP_TIMEOUT)
    assert r.status_code == 405


def test_cookie_secure_flag(server_factory):
    s = server_factory(env={"CHATKIT_COOKIE_SECURE": "1"})
    t = s.new_tenant()
    url, _ = login_link(s, t.user_id)
    r = open_link(url)
    assert r.status_code == 303
    value, attrs = set_cookie_of(r)
    assert attrs == ["Path=/", f"Max-Age={SESSION_TTL_S}", "HttpOnly", "SameSite=Lax", "Secure"], attrs
    assert session_info(s, cookie=value)["user_id"] == t.user_id
    r = requests.post(f"{s.url}/logout", headers={"Cookie": f"{COOKIE}={value}"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 204 and "Secure" in set_cookie_of(r)[1]


def test_https_public_url_makes_secure_cookies_and_links(server_factory):
    pub = "https://chat.example.test"
    s = server_factory(env={"CHATKIT_PUBLIC_URL": pub, "CHATKIT_SESSION_TTL_S": "3600"})
    t = s.new_tenant()
    out = s.cli("token", "create", "--user", t.user_id, "--login-url", env={"CHATKIT_PUBLIC_URL": pub + "/"})
    assert out["login_url"].startswith(pub + "/login?token=ckl_"), out
    r = open_link(local_url(s, out["login_url"]))
    assert r.status_code == 303
    assert set_cookie_of(r)[1] == ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax", "Secure"]


def test_demo_login_url(srv):
    d = srv.cli("demo")
    assert {"account_id", "user_id", "agent_id", "token", "login_url"} <= set(d)
    r = open_link(local_url(srv, d["login_url"]))
    assert r.status_code == 303, r.text
    value, _ = set_cookie_of(r)
    s = session_info(srv, cookie=value)
    assert s["user_id"] == d["user_id"] and s["account_id"] == d["account_id"]
    assert d["agent_id"] in [a["id"] for a in s["agents"]]
    # demo is idempotent: the same tenant, a new link each time
    d2 = srv.cli("demo")
    assert (d2["user_id"], d2["account_id"]) == (d["user_id"], d["account_id"])
    assert d2["login_url"] != d["login_url"]
    assert open_link(local_url(srv, d["login_url"])).status_code == 401


# ------------------------------------------------------------------------------------------
# CORS


def test_cors_headers_on_allowed_origins(srv, owner):
    t = owner.tenant
    for origin in ALLOWED:
        r = post(srv, "threads.list", {}, token=t.token, agent=t.agent_id, headers={"Origin": origin})
        assert r.status_code == 200
        cors_headers_ok(r, origin)
        assert "retry-after" in r.headers.get("Access-Control-Expose-Headers", "").lower()
    o = ALLOWED[0]
    # on a 401 (no credentials), with WWW-Authenticate
    r = requests.post(srv.endpoint, data="{}", headers={"Origin": o}, timeout=HTTP_TIMEOUT)
    check_401(r)
    cors_headers_ok(r, o)
    # on errors
    r = post(srv, "threads.get_by_id", {"thread_id": "thr_" + "0" * 35}, token=t.token, agent=t.agent_id,
             headers={"Origin": o})
    expect_error(r, 404, "not_found")
    cors_headers_ok(r, o)
    r = requests.post(f"{srv.endpoint}?agent_id={t.agent_id}", data=b"{not json",
                      headers={"Origin": o, "Authorization": f"Bearer {t.token}"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    cors_headers_ok(r, o)
    r = requests.get(f"{srv.url}/no/such/route", headers={"Origin": o}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 404
    cors_headers_ok(r, o)
    # on a stream
    r = post(srv, "threads.create", {"input": msg_input("cors stream")}, token=t.token, agent=t.agent_id,
             headers={"Origin": o})
    assert r.status_code == 200 and r.events is not None
    cors_headers_ok(r, o)
    # on an upload and a download
    att = owner.ok("attachments.create", {"name": "n.txt", "size": 5, "mime_type": "text/plain"})
    r = owner.put_bytes(att["id"], b"hello", headers={"Origin": o})
    assert r.status_code == 200
    cors_headers_ok(r, o)
    r = requests.get(f"{srv.url}/chatkit/attachments/{att['id']}", headers=dict(owner.auth_headers(), Origin=o),
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.content == b"hello"
    cors_headers_ok(r, o)
    # on the session endpoint with a cookie (ChatKit.js on another allowed origin)
    session = sign_in(srv, t.user_id)
    r = get_session(srv, cookie=session, headers={"Origin": o})
    assert r.status_code == 200
    cors_headers_ok(r, o)


@pytest.mark.parametrize("origin", [EVIL, "null", "http://app.example.com", "https://app.example.com:8443",
                                    "https://app.example.com.evil.net", "https://sub.app.example.com",
                                    "http://localhost:3001", "http://localhost"])
def test_cors_disallowed_origin(srv, owner, origin):
    t = owner.tenant
    r = post(srv, "threads.list", {}, token=t.token, agent=t.agent_id, headers={"Origin": origin})
    assert r.status_code == 200  # the browser enforces CORS; a bearer request is no CSRF risk
    no_cors(r)
    r = requests.post(srv.endpoint, data="{}", headers={"Origin": origin}, timeout=HTTP_TIMEOUT)
    check_401(r)
    no_cors(r)
    r = requests.options(srv.endpoint, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                "Access-Control-Request-Headers": "authorization, content-type"},
                         timeout=HTTP_TIMEOUT)
    assert r.status_code == 403, r.text
    no_cors(r)
    assert "Access-Control-Allow-Methods" not in r.headers


def preflight(srv, path, origin=ALLOWED[0], method="POST", headers="authorization, content-type"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(srv.url + path, headers=h, timeout=HTTP_TIMEOUT)


def allow_list(resp, name):
    return [v.strip().lower() for v in resp.headers.get(name, "").split(",") if v.strip()]


@pytest.mark.parametrize("path,method", [("/chatkit", "POST"), ("/chatkit/upload/atc_" + "1" * 35, "PUT"),
                                         ("/chatkit/upload", "POST"), ("/chatkit/client_secret", "POST"),
                                         ("/chatkit/session", "GET")])
def test_preflight(srv, path, method):
    for origin in ALLOWED:
        r = preflight(srv, path, origin=origin, method=method)
        assert r.status_code == 204, f"{path}: {r.status_code} {r.text}"
        assert r.content == b""
        cors_headers_ok(r, origin)
        methods = allow_list(r, "Access-Control-Allow-Methods")
        assert "post" in methods and "put" in methods, r.headers
        assert {"authorization", "content-type"} <= set(allow_list(r, "Access-Control-Allow-Headers")), r.headers
        assert int(r.headers["Access-Control-Max-Age"]) > 0
        assert "WWW-Authenticate" not in r.headers


def test_preflight_headers(srv):
    r = preflight(srv, "/chatkit", headers="Authorization, Content-Type, X-ChatKit-Foo, accept-language")
    assert r.status_code == 204, r.text
    assert {"authorization", "content-type", "x-chatkit-foo", "accept-language"} <= set(
        allow_list(r, "Access-Control-Allow-Headers")), r.headers
    r = preflight(srv, "/chatkit", headers=None)
    assert r.status_code == 204 and "post" in allow_list(r, "Access-Control-Allow-Methods")
    for bad in ("x-evil", "authorization, x-evil", "content-type,x-evil,authorization", "cookie"):
        r = preflight(srv, "/chatkit", headers=bad)
        assert r.status_code == 403, f"{bad}: {r.status_code} {r.text}"
        assert r.json()["code"] == "forbidden_header"
        assert "Access-Control-Allow-Methods" not in r.headers
        assert "Access-Control-Allow-Headers" not in r.headers


# ------------------------------------------------------------------------------------------
# hosted mode: the client secret


def test_client_secret(srv, owner):
    url = f"{srv.url}/chatkit/client_secret"
    check_401(requests.post(url, timeout=HTTP_TIMEOUT))
    r = requests.post(url, headers=owner.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json() == {"client_secret": CLIENT_SECRET}
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers.get("Cache-Control") == "no-store"
    # with a session cookie from the page itself, or a JWT
    session = sign_in(srv, owner.tenant.user_id)
    r = requests.post(url, headers={"Cookie": f"{COOKIE}={session}", "Origin": srv.url}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {"client_secret": CLIENT_SECRET}
    # but not cross-site
    r = requests.post(url, headers={"Cookie": f"{COOKIE}={session}", "Origin": EVIL}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and CLIENT_SECRET not in r.text
    tok = make_jwt(claims_for(owner.tenant.account_id))
    r = requests.post(url, headers={"Authorization": f"Bearer {tok}"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {"client_secret": CLIENT_SECRET}
    r = requests.get(url, headers=owner.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 405 and CLIENT_SECRET not in r.text


def test_client_secret_not_configured(server, client):
    url = f"{server.url}/chatkit/client_secret"
    check_401(requests.post(url, timeout=HTTP_TIMEOUT))
    r = requests.post(url, headers=client.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 404 and r.json()["code"] == "not_configured", r.text


def test_secrets_stay_out_of_logs(server_factory):
    client_secret = "cs_test_" + uuid.uuid4().hex
    jwt_secret = "jwt-" + uuid.uuid4().hex + uuid.uuid4().hex
    env = {"CHATKIT_CLIENT_SECRET": client_secret, "CHATKIT_JWT_SECRET": jwt_secret, "CHATKIT_LOG_LEVEL": "debug",
           "CHATKIT_JWT_LEEWAY_S": "0"}
    s = server_factory(env=env)
    t = s.new_tenant()
    c = Client(s, t)
    secrets = [client_secret, jwt_secret, t.token]
    # every kind of credential, good and bad
    c.create_thread("hello")
    r = requests.post(f"{s.url}/chatkit/client_secret", headers=c.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.json() == {"client_secret": client_secret}
    good = make_jwt(claims_for(t.account_id, iss=None, aud=None), secret=jwt_secret)
    bad = make_jwt(claims_for(t.account_id, iss=None, aud=None), secret=jwt_secret + "x")
    expired = make_jwt(claims_for(t.account_id, iss=None, aud=None, exp=_now() - 10), secret=jwt_secret)
    assert session_info(s, token=good)["account_id"] == t.account_id
    check_401(get_session(s, token=bad))
    check_401(get_session(s, token=expired))
    url, _ = login_link(s, t.user_id)
    login_tok = url.split("token=", 1)[1]
    r = open_link(url)
    session = set_cookie_of(r)[0]
    assert session_info(s, cookie=session)["user_id"] == t.user_id
    open_link(url)  # reused
    requests.post(f"{s.url}/logout", headers={"Cookie": f"{COOKIE}={session}"}, timeout=HTTP_TIMEOUT)
    secrets += [good.split(".")[2], bad.split(".")[2], expired.split(".")[2], login_tok, session]
    s.stop()
    log = s.log_path.read_text(errors="replace")
    assert "rid=" in log  # the debug log was written
    for sec in secrets:
        assert sec not in log, f"a secret ({sec[:6]}…) is in the server log"

    # `chatkitd config --json` masks them
    cp = run_cli(["config", "--json"], env=env, want_json=False)
    cfg = json.loads(cp.stdout)
    assert cfg["CHATKIT_CLIENT_SECRET"] == "***" and cfg["CHATKIT_JWT_SECRET"] == "***"
    assert client_secret not in cp.stdout.decode() and jwt_secret not in cp.stdout.decode()
    cp = run_cli(["config", "--json"], env={}, want_json=False)
    cfg = json.loads(cp.stdout)
    assert cfg["CHATKIT_CLIENT_SECRET"] == "" and cfg["CHATKIT_JWT_SECRET"] == ""


def test_config_masks_secrets_whatever_their_text():
    env = {"CHATKIT_JWT_SECRET": "sqlite:" + "s" * 40, "CHATKIT_CLIENT_SECRET": "sqlite:cs_test"}
    cp = run_cli(["config", "--json"], env=env, want_json=False)
    cfg = json.loads(cp.stdout)
    assert cfg["CHATKIT_JWT_SECRET"] == "***" and cfg["CHATKIT_CLIENT_SECRET"] == "***", cfg


# ------------------------------------------------------------------------------------------
# rate limits


def test_rate_limit_per_user(server_factory):
    s = server_factory(env={"CHATKIT_RATE_LIMIT_RPM": "5", "CHATKIT_ALLOWED_ORIGINS": ALLOWED[0]})
    t = s.new_tenant()
    c = Client(s, t)
    other = Client(s, s.new_user(t.account_id, t.agent_id))
    # refused credentials do not count against the user
    for _ in range(3):
        check_401(get_session(s, token="ckt_" + "Q" * 43))
    # five quick requests of any kind pass
    c.list_threads()
    session_info(s, token=t.token)
    c.list_threads()
    r = requests.get(f"{s.url}/metrics", headers=c.auth_headers(), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    c.list_threads()
    # the sixth is refused
    r = post(s, "threads.list", {}, token=t.token, agent=t.agent_id, headers={"Origin": ALLOWED[0]})
    expect_error(r, 429, "rate_limited")
    ra = r.headers.get("Retry-After")
    assert ra and ra.isdigit() and 1 <= int(ra) <= 12, ra  # one request back every 60/5 s
    cors_headers_ok(r, ALLOWED[0])
    assert "retry-after" in r.headers.get("Access-Control-Expose-Headers", "").lower()
    r = get_session(s, token=t.token)
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    r = c.call("threads.create", {"input": msg_input("refused")})
    expect_error(r, 429, "rate_limited")
    # another user of the same account is unaffected
    for _ in range(5):
        assert other.list_threads()["data"] == []
    expect_error(other.call("threads.list", {}), 429, "rate_limited")
    # and nothing was created by the refused request
    s2 = Client(s, s.new_user(t.account_id, t.agent_id))
    assert s2.list_threads()["data"] == []


def test_rate_limit_applies_to_jwt_and_cookie_users(server_factory):
    s = server_factory(env={"CHATKIT_RATE_LIMIT_RPM": "2", "CHATKIT_JWT_SECRET": JWT_SECRET,
                            "CHATKIT_JWT_LEEWAY_S": "0"})
    t = s.new_tenant()
    sub = "rl-" + uuid.uuid4().hex[:6]
    # two different JWTs of the same sub share one budget
    j1 = make_jwt(claims_for(t.account_id, sub=sub, iss=None, aud=None))
    j2 = make_jwt(claims_for(t.account_id, sub=sub, iss=None, aud=None, ttl=900))
    assert get_session(s, token=j1).status_code == 200
    assert get_session(s, token=j2).status_code == 200
    r = get_session(s, token=j1)
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    # the cookie and the token of one user share one budget too
    session = sign_in(s, t.user_id)
    assert get_session(s, cookie=session).status_code == 200
    assert get_session(s, token=t.token).status_code == 200
    assert get_session(s, cookie=session).status_code == 429


def test_stream_limit_per_user(server_factory):
    s = server_factory(env={"CHATKIT_MAX_STREAMS_PER_USER": "1", "CHATKIT_DEMO_DELAY_MS": "300"})
    t = s.new_tenant()
    c = Client(s, t)
    other = Client(s, s.new_user(t.account_id, t.agent_id))
    tid, _ = c.create_thread("a first thread")  # fast, and over
    rs = RawStream(s, t, "threads.create", {"input": msg_input("slow please")})
    try:
        assert rs.status == 200
        rs.wait_for(lambda e: any(x["type"] == "thread.item.updated" for x in e), "a text delta")
        # a second stream of the same user: refused, whatever kind of turn it is
        r = c.call("threads.create", {"input": msg_input("second")})
        expect_error(r, 429, "too_many_streams")
        ra = r.headers.get("Retry-After")
        assert ra and ra.isdigit() and int(ra) >= 1, ra
        expect_error(c.call("threads.add_user_message", {"thread_id": tid, "input": msg_input("more")}),
                     429, "too_many_streams")
        # requests that do not stream are not limited
        assert len(c.list_threads()["data"]) == 2
        # another user streams
        otid, _ = other.create_thread("another user's turn")
        assert [x["id"] for x in other.list_threads()["data"]] == [otid]
        # the first stream runs to its end
        events = rs.read_all()
        assert events[-1]["type"] in ("thread.updated", "thread.item.done"), [e["type"] for e in events[-3:]]
    finally:
        rs.close()
    # the refused requests left nothing behind
    assert [i["type"] for i in c.all_items(tid)] == ["user_message", "assistant_message"]
    # after the first ended, the user streams again
    tid2, _ = c.create_thread("again")
    assert len(c.list_threads()["data"]) == 3
    # a stream the client drops also frees its slot
    rs = RawStream(s, t, "threads.add_user_message", {"thread_id": tid2, "input": msg_input("slow again")})
    try:
        rs.wait_for(lambda e: any(x["type"] == "thread.item.updated" for x in e), "a text delta")
        expect_error(c.call("threads.add_user_message", {"thread_id": tid, "input": msg_input("x")}),
                     429, "too_many_streams")
    finally:
        rs.close()
    deadline = time.monotonic() + 10
    while True:
        r = c.call("threads.add_user_message", {"thread_id": tid, "input": msg_input("after the drop")})
        if r.status_code == 200:
            break
        expect_error(r, 429, "too_many_streams")
        assert time.monotonic() < deadline, "the dropped stream's slot was never freed"
        time.sleep(0.05)


def test_stream_limit_holds_for_concurrent_requests(server_factory):
    s = server_factory(env={"CHATKIT_MAX_STREAMS_PER_USER": "1", "CHATKIT_DEMO_DELAY_MS": "300"})
    t = s.new_tenant()
    body = json.dumps({"type": "threads.create", "params": {"input": msg_input("slow")}}).encode()
    req = build_request("POST", f"/chatkit?agent_id={t.agent_id}", body,
                        {"Authorization": f"Bearer {t.token}", "Content-Type": "application/json"})
    assert Client(s, t).list_threads()["data"] == []  # the token is in the auth cache now
    for _ in range(3):
        conns = [RawConn(s.port) for _ in range(4)]
        try:
            for c in conns:
                c.send(req)  # four at once, each on its own connection
            statuses = [c.read_head()[0] for c in conns]
        finally:
            for c in conns:
                c.close()
        assert sorted(statuses) == [200, 429, 429, 429], statuses
        # the stream ends when its connection closes: wait for the slot
        deadline = time.monotonic() + 10
        while Client(s, t).call("threads.create", {"input": msg_input("probe")}).status_code != 200:
            assert time.monotonic() < deadline, "the slot of a dropped stream was never freed"
            time.sleep(0.05)
