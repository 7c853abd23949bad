"""MCP over Streamable HTTP (src/mcp/http.c) through the agent run, driven by the mock LLM
("call tool NAME {json}"):

- the reference server-everything (node_modules, `streamableHttp` on 127.0.0.1): a tool call,
  a tool whose SSE answer carries progress notifications, one session for several turns, and
  the server restarted on the same port (its session is gone: the next turn still works, the
  transport initializes again and resends);
- our recording fixture tests/fixtures/mcp_http_fake.py: the headers of every POST (the
  configured bearer token, Accept, Mcp-Session-Id once issued, MCP-Protocol-Version), a 404
  for a forgotten session, HTTP errors, an SSE answer without a response, a wrong token, and
  the DELETE of the session when chatkitd stops;
- a server that is down (its tools are left out, the log says why);
- the --mcp-http / --mcp-header / --mcp-stdio / --mcp-env flags of `agent create`.

Every process started here is stopped by PID (SIGTERM, then SIGKILL).
"""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, mock_get, run_cli, text_of

ROOT = Path(__file__).resolve().parent.parent.parent
EVERYTHING = ROOT / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
FAKE = ROOT / "tests" / "fixtures" / "mcp_http_fake.py"
TOKEN = "tok-HTTP-SECRET-4711"


# ---- processes --------------------------------------------------------------------------

def _stop(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _wait_port(proc, port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Everything:
    """server-everything over Streamable HTTP on a fixed port (so it can be restarted there)."""

    def __init__(self, log_dir):
        node = shutil.which("node")
        assert node, "node is not on PATH: run scripts/deps.sh"
        assert EVERYTHING.exists(), "node_modules is missing: run scripts/deps.sh (npm ci)"
        self.node = node
        self.log_dir = log_dir
        self.port = None
        self.proc = None
        self.starts = 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, port=None):
        for _ in range(1 if port else 3):
            self.port = port or free_port()
            self.starts += 1
            log_path = self.log_dir / f"everything-{self.starts}.log"
            with open(log_path, "wb") as log:
                self.proc = subprocess.Popen([self.node, str(EVERYTHING), "streamableHttp"], cwd=ROOT,
                                             env=dict(os.environ, PORT=str(self.port)),
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            if _wait_port(self.proc, self.port):
                return self
            _stop(self.proc)
        raise AssertionError("server-everything streamableHttp did not start: "
                             + log_path.read_text(errors="replace")[-2000:])

    def restart(self):
        _stop(self.proc)
        return self.start(self.port)

    def stop(self):
        if self.proc:
            _stop(self.proc)


@pytest.fixture
def everything(tmp_path):
    e = Everything(tmp_path)
    try:
        yield e.start()
    finally:
        e.stop()


class Fake:
    def __init__(self, *flags):
        self.proc = subprocess.Popen(["/usr/bin/python3", str(FAKE), *flags], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def requests(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_requests", timeout=5) as r:
            return json.loads(r.read())

    def post(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def mcp_posts(self, method=None):
        out = [r for r in self.requests() if r["path"] == "/mcp" and r["method"] == "POST"]
        return [r for r in out if method is None or (r["body"] or {}).get("method") == method]

    def stop(self):
        _stop(self.proc)


@pytest.fixture
def fake():
    made = []

    def make(*flags):
        f = Fake(*flags)
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


# ---- chatkitd ---------------------------------------------------------------------------

def http_setup(server_factory, mock, urls, headers=(), env=None):
    """chatkitd with one agent whose MCP servers are `urls` (headers apply to the first)."""
    e = {"CHATKIT_LOG_LEVEL": "debug", "OPENAI_BASE_URL": mock + "/v1", "OPENAI_API_KEY": "sk-x"}
    e.update(env or {})
    mock_get(mock, "/_reset")
    s = server_factory(env=e)
    acct = s.new_account()
    args = ["agent", "create", "--account", acct, "--name", "http", "--model", "openai:m"]
    for i, u in enumerate(urls):
        args += ["--mcp-http", u]
        if i == 0:
            for h in headers:
                args += ["--mcp-header", h]
    ag = s.cli(*args)
    return s, s.client(s.new_user(acct, ag["id"]))


def tool_message(mock, i=-1):
    msgs = mock_get(mock, "/_requests")[i]["body"]["messages"]
    return [m for m in msgs if m["role"] == "tool"][-1]["content"]


def offered(mock, i=0):
    return {t["function"]["name"] for t in mock_get(mock, "/_requests")[i]["body"].get("tools", [])}


def log_of(s):
    return s.log_tail(max_bytes=10 ** 7)


# ---- server-everything ------------------------------------------------------------------

def test_everything_tool_call_and_one_session(server_factory, mock, everything):
    s, c = http_setup(server_factory, mock, [everything.url])
    tid, ev = c.create_thread('call tool echo {"message":"over http"}')
    assert tool_message(mock) == "Echo: over http"
    assert {"echo", "get-sum", "trigger-long-running-operation"} <= offered(mock)
    # the server's instructions reached the model
    first = mock_get(mock, "/_requests")[0]["body"]["messages"][0]
    assert first["role"] == "system" and len(first["content"]) > 20
    c.send(tid, 'call tool get-sum {"a":20,"b":22}')
    assert "42" in tool_message(mock)
    tid, ev = c.create_thread('call tool echo {"message":"third"}')
    assert tool_message(mock) == "Echo: third"
    log = log_of(s)
    # one session for the three turns: initialized once, never renewed
    assert log.count('msg="mcp server ready" server="http1"') == 1, log[-3000:]
    assert "session expired" not in log


def test_everything_progress_over_sse(server_factory, mock, everything):
    s, c = http_setup(server_factory, mock, [everything.url])
    tid, ev = c.create_thread('call tool trigger-long-running-operation {"duration":1,"steps":3}')
    assert "Long running operation completed" in tool_message(mock)
    texts = [p["text"] for p in ev.of("progress_update")]
    assert texts[:2] == ["Analyzing your request...", "Executing Trigger long running operation..."], texts
    steps = [t for t in texts if t.startswith("Executing trigger-long-running-operation (")]
    assert [t.rsplit(" ", 1)[1] for t in steps] == ["(33%)", "(67%)", "(100%)"], texts


def test_everything_restarted_mid_test(server_factory, mock, everything):
    s, c = http_setup(server_factory, mock, [everything.url])
    tid, ev = c.create_thread('call tool echo {"message":"before"}')
    assert tool_message(mock) == "Echo: before"
    port = everything.port
    everything.restart()  # same port, new process: the old session is unknown there
    assert everything.port == port
    c.send(tid, 'call tool echo {"message":"after"}')
    assert tool_message(mock) == "Echo: after"
    assert text_of(ev)  # the first turn answered too
    log = log_of(s)
    assert "mcp http session expired, initializing again" in log
    assert "mcp http session renewed" in log
    c.send(tid, 'call tool echo {"message":"and again"}')
    assert tool_message(mock) == "Echo: and again"


# ---- the recording fixture ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["json", "sse"])
def test_headers_token_and_session(server_factory, mock, fake, mode):
    f = fake("--token", TOKEN, *(["--sse"] if mode == "sse" else []))
    s, c = http_setup(server_factory, mock, [f.url], headers=[f"Authorization: Bearer {TOKEN}",
                                                                "X-Tenant: acme"])
    tid, ev = c.create_thread('call tool echo {"message":"one"}')
    assert tool_message(mock) == "Echo: one"
    c.send(tid, 'call tool echo {"message":"two"}')
    assert tool_message(mock) == "Echo: two"
    posts = f.mcp_posts()
    methods = [p["body"]["method"] if "method" in p["body"] else "(response)" for p in posts]
    assert methods[:3] == ["initialize", "notifications/initialized", "tools/list"], methods
    assert methods.count("initialize") == 1 and methods.count("tools/call") == 2, methods
    sid = None
    for p in posts:
        h = p["headers"]
        assert h["authorization"] == f"Bearer {TOKEN}" and h["x-tenant"] == "acme", h
        assert h["content-type"] == "application/json"
        assert h["accept"] == "application/json, text/event-stream"
        if p["body"].get("method") == "initialize":
            assert "mcp-session-id" not in h and "mcp-protocol-version" not in h
            assert p["body"]["params"]["protocolVersion"] == "2025-11-25"
        else:
            sid = sid or h["mcp-session-id"]
            assert h["mcp-session-id"] == sid  # the same session throughout
            assert h["mcp-protocol-version"] == "2025-11-25"
    call = [p for p in posts if p["body"].get("method") == "tools/call"][0]["body"]
    assert call["params"]["_meta"]["progressToken"].startswith("ck-")
    # the token never reaches the log, nor does the printed agent configuration hold it
    assert TOKEN not in log_of(s)
    s.stop()
    # stopping chatkitd ends the session
    dels = [r for r in f.requests() if r["method"] == "DELETE"]
    assert len(dels) == 1 and dels[0]["headers"]["mcp-session-id"] == sid
    assert dels[0]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_session_not_found_initializes_again(server_factory, mock, fake):
    f = fake("--sse")
    s, c = http_setup(server_factory, mock, [f.url])
    tid, ev = c.create_thread('call tool echo {"message":"first"}')
    assert tool_message(mock) == "Echo: first"
    f.post("/_expire")  # the server forgets the session: 404 on the next POST (spec)
    c.send(tid, 'call tool steps {"n":2}')
    assert tool_message(mock) == "did 2 steps"
    texts = [p["text"] for p in c.send(tid, 'call tool steps {"n":3}').of("progress_update")]
    assert "step 3/3" in texts, texts
    posts = f.mcp_posts()
    methods = [p["body"].get("method") for p in posts]
    assert methods.count("initialize") == 2, methods
    calls = [p for p in posts if p["body"].get("method") == "tools/call"]
    # the call that met the forgotten session was sent again, with the new session id
    assert calls[1]["body"] == calls[2]["body"]
    assert calls[1]["headers"]["mcp-session-id"] != calls[2]["headers"]["mcp-session-id"]
    i2 = methods.index("initialize", 1)
    assert methods[i2 + 1] == "notifications/initialized"
    assert "mcp http session renewed" in log_of(s)


def test_http_errors_reach_the_model(server_factory, mock, fake):
    f = fake()
    s, c = http_setup(server_factory, mock, [f.url])
    tid, ev = c.create_thread('call tool http_error {"status":500}')
    msg = tool_message(mock)
    assert msg.startswith("Error: ") and "answered 500" in msg and "failing with 500 on purpose" in msg, msg
    # an SSE answer that ends early is resumed with GET + Last-Event-ID (here: refused)
    c.send(tid, "call tool no_answer")
    assert "closed its answer early and did not resume it: HTTP 405" in tool_message(mock)
    gets = [r for r in f.requests() if r["method"] == "GET" and r["path"] == "/mcp"
            and "last-event-id" in {k.lower() for k in r["headers"]}]  # (not the standalone GET)
    assert len(gets) == 1 and gets[0]["headers"]["last-event-id"], gets
    assert gets[0]["headers"]["accept"] == "text/event-stream"
    c.send(tid, 'call tool echo {"message":"still fine"}')
    assert tool_message(mock) == "Echo: still fine"
    assert s.alive()


def test_sse_answer_resumed_after_retry(server_factory, mock, fake):
    """SEP-1699: the server closes the answer's stream after a priming event (id, retry:);
    the client waits retry ms, then GETs the rest with Last-Event-ID."""
    f = fake("--token", TOKEN)
    s, c = http_setup(server_factory, mock, [f.url], headers=[f"Authorization: Bearer {TOKEN}"])
    t0 = time.monotonic()
    tid, ev = c.create_thread('call tool resumable {"retry_ms":400}')
    assert tool_message(mock) == "resumed answer"
    assert time.monotonic() - t0 >= 0.4
    reqs = [r for r in f.requests() if r["path"] == "/mcp"]
    call = [i for i, r in enumerate(reqs) if (r["body"] or {}).get("method") == "tools/call"][-1]
    get = reqs[call + 1]
    assert get["method"] == "GET" and get["headers"]["last-event-id"].startswith("resume-")
    assert get["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert get["headers"]["mcp-session-id"] == reqs[call]["headers"]["mcp-session-id"]
    assert get["headers"]["mcp-protocol-version"] == "2025-11-25"
    # the GET stream (left open by the server) was closed: the next turn works as usual
    c.send(tid, 'call tool echo {"message":"next"}')
    assert tool_message(mock) == "Echo: next"


def test_wrong_token_leaves_the_tools_out(server_factory, mock, fake):
    f = fake("--token", TOKEN)
    s, c = http_setup(server_factory, mock, [f.url], headers=["Authorization: Bearer not-the-token"])
    tid, ev = c.create_thread("hello")
    assert text_of(ev) == "Mock reply to: hello"
    assert "tools" not in mock_get(mock, "/_requests")[0]["body"]
    log = log_of(s)
    assert "MCP server unavailable" in log and "answered 401" in log
    assert "not-the-token" not in log


def test_server_down(server_factory, mock):
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nobody listens there
    s, c = http_setup(server_factory, mock, [url])
    t0 = time.monotonic()
    tid, ev = c.create_thread("hello")
    assert time.monotonic() - t0 < 10
    assert text_of(ev) == "Mock reply to: hello"
    assert "tools" not in mock_get(mock, "/_requests")[0]["body"]
    log = log_of(s)
    assert "MCP server unavailable" in log and "could not be reached" in log


def test_one_server_down_the_other_serves(server_factory, mock, fake):
    f = fake()
    down = f"http://127.0.0.1:{free_port()}/mcp"
    s, c = http_setup(server_factory, mock, [down, f.url])
    tid, ev = c.create_thread('call tool echo {"message":"from the live one"}')
    assert tool_message(mock) == "Echo: from the live one"


# ---- agent create flags ------------------------------------------------------------------

def test_agent_flags_store_headers_and_env(tmp_path):
    d = tmp_path / "flags"
    acct = run_cli(["account", "create", "Acme"], data_dir=d)["id"]
    ag = run_cli(["agent", "create", "--account", acct, "--name", "x",
                  "--mcp-http", "http://127.0.0.1:1/mcp", "--mcp-header", f"Authorization: Bearer {TOKEN}",
                  "--mcp-header", "X-Tenant:acme",
                  "--mcp-http", "https://mcp.example.com/mcp",
                  "--mcp-stdio", "node server.js --flag", "--mcp-env", "MEMORY_FILE_PATH=/tmp/m.jsonl",
                  "--mcp-env", "SERVICE_TOKEN=s3cret",
                  "--mcp-stdio", "other-server"], data_dir=d)
    want = {"mcp_http": [{"url": "http://127.0.0.1:1/mcp",
                          "headers": {"Authorization": f"Bearer {TOKEN}", "X-Tenant": "acme"}},
                         "https://mcp.example.com/mcp"],
            "mcp_stdio": [{"command": "node server.js --flag",
                           "env": {"MEMORY_FILE_PATH": "/tmp/m.jsonl", "SERVICE_TOKEN": "s3cret"}},
                          "other-server"],
            "tools": [], "models": []}
    with sqlite3.connect(d / "chatkitd.db") as db:
        cfg = json.loads(db.execute("SELECT config_json FROM agents WHERE id = ?", (ag["id"],)).fetchone()[0])
    assert cfg == want
    # printed with the header values and secret-looking env values masked
    printed = ag["config"]
    assert printed["mcp_http"][0]["headers"] == {"Authorization": "***", "X-Tenant": "***"}
    assert printed["mcp_stdio"][0]["env"] == {"MEMORY_FILE_PATH": "/tmp/m.jsonl", "SERVICE_TOKEN": "***"}
    assert TOKEN not in json.dumps(ag)


@pytest.mark.parametrize("flags,needle", [
    (["--mcp-http", "ftp://example.com/mcp"], b"--mcp-http"),
    (["--mcp-http", "example.com/mcp"], b"--mcp-http"),
    (["--mcp-http", "http://"], b"--mcp-http"),
    (["--mcp-http", "http://a b/mcp"], b"--mcp-http"),
    (["--mcp-header", "Authorization: Bearer x"], b"must follow the --mcp-http"),
    (["--mcp-stdio", "cmd", "--mcp-header", "A: b"], b"must follow the --mcp-http"),
    (["--mcp-http", "http://h/mcp", "--mcp-header", "no colon"], b"--mcp-header takes"),
    (["--mcp-http", "http://h/mcp", "--mcp-header", "Bad Name: v"], b"--mcp-header takes"),
    (["--mcp-http", "http://h/mcp", "--mcp-header", ": v"], b"--mcp-header takes"),
    (["--mcp-http", "http://h/mcp", "--mcp-header", "A: x\r\nB: y"], b"--mcp-header takes"),
    (["--mcp-env", "A=1"], b"must follow the --mcp-stdio"),
    (["--mcp-http", "http://h/mcp", "--mcp-env", "A=1"], b"must follow the --mcp-stdio"),
    (["--mcp-stdio", "cmd", "--mcp-env", "1A=x"], b"--mcp-env takes"),
    (["--mcp-stdio", "cmd", "--mcp-env", "A-B=x"], b"--mcp-env takes"),
    (["--mcp-stdio", "cmd", "--mcp-env", "NOVALUE"], b"--mcp-env takes"),
    (["--mcp-stdio", "cmd", "--mcp-env", "=x"], b"--mcp-env takes"),
    (["--mcp-stdio", "  "], b"--mcp-stdio"),
])
def test_agent_flags_invalid(tmp_path, flags, needle):
    d = tmp_path / "bad"
    acct = run_cli(["account", "create", "Acme"], data_dir=d)["id"]
    cp = run_cli(["agent", "create", "--account", acct, "--name", "x"] + flags, data_dir=d, check=False)
    assert cp.returncode == 2, f"{flags}: exit {cp.returncode}, stderr {cp.stderr!r}"
    assert needle in cp.stderr, cp.stderr
    assert cp.stdout.strip() == b""
    with sqlite3.connect(d / "chatkitd.db") as db:
        assert db.execute("SELECT count(*) FROM agents").fetchone() == (0,)
