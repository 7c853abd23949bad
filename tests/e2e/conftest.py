"""End-to-end fixtures: start the real chatkitd on 127.0.0.1, create tenants with the admin
CLI, and talk to /chatkit exactly as ChatKit.js does (POST JSON, read SSE or JSON).

Run from the repo root with Debian's python (build first: ninja -C build):
    /usr/bin/python3 -m pytest tests/e2e -q
    CHATKITD_BIN=build-asan/chatkitd /usr/bin/python3 -m pytest tests/e2e -q   # sanitizer build

Every reply and event that goes through Client.call / Client.stream / RawStream is
validated by shapes.py. Servers are stopped by PID (SIGTERM, 10 s, SIGKILL) after each test
(the shared one at the end of the session); a sanitizer report in a server log fails the test.
"""

import atexit
import json
import os
import shlex
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import shapes

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("CHATKITD_BIN") or str(REPO / "build" / "chatkitd")

STOP_WAIT_S = 10.0
# CHATKITD_WRAP: a command prefix for `serve`, e.g. "valgrind -q --error-exitcode=99"; the
# server then exits non-zero on a memory error or leak, which test_zz_shutdown checks.
WRAP = shlex.split(os.environ.get("CHATKITD_WRAP", ""))
READY_WAIT_S = 60.0 if WRAP else 10.0
HTTP_TIMEOUT = (5, 30)  # connect, read (per socket read)

_live_procs = []  # every server we start, so that no test leaves one behind
_live_lock = threading.Lock()


_bin_copy_dir = None


def pytest_configure(config):
    """Check the binary exists and run a private copy of it, so that a rebuild while the
    suite runs cannot swap it under a test."""
    global BIN, _bin_copy_dir
    config.addinivalue_line("markers", "budget: a memory budget, measured on the plain build "
                            "(scripts/test.sh runs these in a stage of their own)")
    src = BIN
    if not (os.path.isfile(src) and os.access(src, os.X_OK)):
        raise pytest.UsageError(
            f"chatkitd binary not found or not executable at {src}. "
            f"Build it first (ninja -C {REPO}/build) or point CHATKITD_BIN at a build.")
    _bin_copy_dir = tempfile.mkdtemp(prefix="chatkitd-e2e-bin-")
    dst = os.path.join(_bin_copy_dir, "chatkitd")
    err = ""
    for _ in range(30):  # the file may be in the middle of being re-linked
        try:
            shutil.copy2(src, dst)
            cp = subprocess.run([dst, "config"], cwd=_bin_copy_dir, env=base_env(), timeout=10,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            if cp.returncode == 0:
                BIN = dst
                return
            err = cp.stderr.decode(errors="replace")
        except (OSError, subprocess.SubprocessError) as e:
            err = str(e)
        time.sleep(1)
    raise pytest.UsageError(f"{src} does not run (`chatkitd config` failed): {err}")


def chatkitd_bin():
    return BIN


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _stop_all():
    with _live_lock:
        procs = list(_live_procs)
    for p in procs:
        _stop_proc(p)


atexit.register(_stop_all)  # last resort if the session dies before sessionfinish


def pytest_sessionfinish(session, exitstatus):
    _stop_all()
    if _bin_copy_dir:
        shutil.rmtree(_bin_copy_dir, ignore_errors=True)


def _test_failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


# ------------------------------------------------------------------------------------------
# processes


def base_env(extra=None):
    """The caller's environment without any chatkitd configuration, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("CHATKIT_") or k.startswith("OPENAI_") or k.startswith("ANTHROPIC_")
                   or k == "DATABASE_URL")}
    env.setdefault("LC_ALL", "C.UTF-8")
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_proc(proc, sig=signal.SIGTERM, wait=STOP_WAIT_S):
    """SIGTERM, wait up to `wait` seconds, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with _live_lock:
        if proc in _live_procs:
            _live_procs.remove(proc)
    return proc.returncode


def run_cli(args, data_dir=None, env=None, timeout=30, check=True, want_json=True):
    """Run `chatkitd ARGS [--json] [--data-dir DIR]`. Returns the parsed JSON (want_json and
    check) or the CompletedProcess."""
    cmd = [BIN] + list(args)
    if want_json and "--json" not in cmd:
        cmd.append("--json")
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    cp = subprocess.run(cmd, env=base_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        timeout=timeout, stdin=subprocess.DEVNULL)
    if not check:
        return cp
    assert cp.returncode == 0, (f"{' '.join(cmd)} exited {cp.returncode}\nstdout: {cp.stdout!r}\n"
                                f"stderr: {cp.stderr.decode(errors='replace')}")
    if not want_json:
        return cp
    out = cp.stdout.decode("utf-8").strip()
    lines = out.splitlines()
    assert len(lines) == 1, f"{' '.join(cmd)}: expected one JSON line, got {out!r}"
    obj = shapes.strict_loads(lines[0])
    shapes.no_nulls(obj, "cli")
    return obj


class Server:
    def __init__(self, data_dir, env=None, log_path=None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env or {})
        self.log_path = Path(log_path or (str(self.data_dir) + ".log"))
        self.proc = None
        self.port = None
        self.returncode = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self):
        return f"{self.url}/chatkit"

    def start(self):
        last = ""
        for _attempt in range(3):
            self.port = free_port()
            env = {"CHATKIT_SSE_HEARTBEAT_MS": "0", "CHATKIT_LOG_LEVEL": "info",
                   "CHATKIT_LLM_RETRY_BASE_MS": "20",
                   # the title request runs beside the turn: tests that count upstream
                   # requests would race it; the title tests turn it on
                   "CHATKIT_MODEL_TITLES": "0",
                   # the suite shares one user across many fast requests; the limit tests
                   # set their own values
                   "CHATKIT_RATE_LIMIT_RPM": "0", "CHATKIT_MAX_STREAMS_PER_USER": "0"}
            env.update(self.env)
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                WRAP + [BIN, "serve", "--data-dir", str(self.data_dir), "--listen",
                        f"127.0.0.1:{self.port}"],
                env=base_env(env), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
            with _live_lock:
                _live_procs.append(self.proc)
            if self._wait_ready():
                return self
            _stop_proc(self.proc)
            last = self.log_tail()
        raise AssertionError(f"chatkitd did not become ready (exit {self.proc.returncode}):\n{last}")

    def _wait_ready(self):
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = requests.get(f"{self.url}/healthz", timeout=1)
                if r.status_code == 200:
                    assert r.json() == {"status": "ok"}, f"/healthz body {r.text!r}"
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.02)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, wait=STOP_WAIT_S):
        if self.proc is None:
            return None
        self.returncode = _stop_proc(self.proc, sig, wait)
        return self.returncode

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_size(self):
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_tail(self, since=0, max_bytes=6000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                data = f.read()
        except OSError:
            return ""
        return data[-max_bytes:].decode("utf-8", "replace")

    def cli(self, *args, **kw):
        return run_cli(args, data_dir=self.data_dir, **kw)

    # tenants -----------------------------------------------------------------------------

    def new_account(self, name=None):
        acct = self.cli("account", "create", name or f"acct-{uuid.uuid4().hex[:8]}")
        return acct["id"]

    def new_agent(self, account_id, name=None):
        ag = self.cli("agent", "create", "--account", account_id, "--name", name or "helper",
                      "--model", "demo")
        return ag["id"]

    def new_user(self, account_id, agent_id, name=None, ttl=None):
        u = self.cli("user", "create", "--account", account_id, name or f"user-{uuid.uuid4().hex[:8]}")
        args = ["token", "create", "--user", u["id"]] + (["--ttl", ttl] if ttl else [])
        t = self.cli(*args)
        return Tenant(account_id=account_id, user_id=u["id"], agent_id=agent_id, token=t["token"])

    def new_tenant(self):
        """A fresh account with one demo agent and one user with a token."""
        acct = self.new_account()
        agent = self.new_agent(acct)
        return self.new_user(acct, agent)

    def client(self, tenant):
        return Client(self, tenant)


@dataclass
class Tenant:
    account_id: str
    user_id: str
    agent_id: str
    token: str


# ------------------------------------------------------------------------------------------
# fixtures


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer")


# valgrind (CHATKITD_WRAP="valgrind ..."): memory errors while running, leaks and a non-zero
# error count at exit
VALGRIND_REPORT = re.compile(r"==\d+== (Invalid (read|write|free)|Conditional jump|Use of uninit"
                             r"|Syscall param|Mismatched free|.*are (definitely|indirectly|possibly) "
                             r"lost|ERROR SUMMARY: [1-9])")


def sanitizer_report(text):
    """The first sanitizer or valgrind report in a server log, or None."""
    for m in SANITIZER_MARKERS:
        i = text.find(m)
        if i >= 0:
            return text[max(0, i - 200):i + 3000]
    m = VALGRIND_REPORT.search(text)
    if m:
        return text[max(0, m.start() - 200):m.start() + 3000]
    return None


@pytest.fixture
def server_factory(tmp_path, request):
    """start(env=None, data_dir=None) -> a started Server; all stopped after the test."""
    started = []

    def start(env=None, data_dir=None):
        d = Path(data_dir) if data_dir else tmp_path / f"data{len(started)}"
        s = Server(d, env=env, log_path=tmp_path / f"server{len(started)}.log")
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.stop()
    if _test_failed(request):
        for i, s in enumerate(started):
            print(f"---- server {i} log (exit {s.returncode}) ----\n{s.log_tail()}")
    for i, s in enumerate(started):
        rep = sanitizer_report(s.log_tail(max_bytes=10 ** 7))
        if rep:
            pytest.fail(f"sanitizer report in the log of server {i}:\n{rep}")


SHARED_ENV = {
    "CHATKIT_DEMO_DELAY_MS": "150",
    "CHATKIT_ALLOWED_MIME_TYPES": "image/*,application/pdf,text/plain",
    "CHATKIT_UPLOAD_MAX_BYTES": "1000000",
    "CHATKIT_PUBLIC_URL": "http://chat.example.test",
}


class _SharedServer:
    def __init__(self, root):
        self.root = root
        self.server = None
        self.n = 0

    def get(self):
        if self.server is None or not self.server.alive():
            self.n += 1
            d = self.root / f"shared{self.n}"
            self.server = Server(d, env=SHARED_ENV).start()
        return self.server


@pytest.fixture(scope="session")
def _shared(tmp_path_factory):
    holder = _SharedServer(tmp_path_factory.mktemp("shared"))
    yield holder
    if holder.server is not None:
        holder.server.stop()


@pytest.fixture
def server(_shared, request):
    """The session's shared server (env SHARED_ENV). A test that kills it fails."""
    s = _shared.get()
    offset = s.log_size()
    yield s
    died = not s.alive()
    if died or _test_failed(request):
        print(f"---- shared server log during the test ----\n{s.log_tail(offset)}")
    if died:
        pytest.fail(f"chatkitd died during the test (exit code {s.proc.returncode})")
    rep = sanitizer_report(s.log_tail(offset, max_bytes=10 ** 7))
    if rep:
        pytest.fail(f"sanitizer report in the shared server's log during the test:\n{rep}")


@pytest.fixture
def tenant(server):
    return server.new_tenant()


@pytest.fixture
def client(server, tenant):
    return Client(server, tenant)


# ------------------------------------------------------------------------------------------
# requests

DEFAULT = object()
STREAMING_TYPES = {"threads.create", "threads.add_user_message", "threads.add_client_tool_output",
                   "threads.add_structured_input", "threads.retry_after_item", "threads.custom_action"}


def msg_input(text, attachments=(), quoted_text=None, inference_options=None, content=None):
    inp = {"content": content if content is not None else [{"type": "input_text", "text": text}],
           "attachments": list(attachments),
           "inference_options": inference_options or {}}
    if quoted_text is not None:
        inp["quoted_text"] = quoted_text
    return inp


class Events(list):
    """Parsed events of one SSE reply; .raw = the body bytes, .comments = comment lines."""
    raw = b""
    comments = 0
    resp = None

    def types(self):
        return [e["type"] for e in self]

    def of(self, typ):
        return [e for e in self if e["type"] == typ]


def parse_sse(raw, partial=False):
    """Parse an SSE body: blocks separated by a blank line, each one `data: <compact JSON>`
    line; comment lines (starting with ':') are counted and ignored. Validates each event."""
    assert b"\r" not in raw, "SSE body contains CR characters"
    text = raw.decode("utf-8")  # strict: invalid UTF-8 fails here
    blocks = text.split("\n\n")
    tail = blocks.pop()
    if not partial:
        assert tail == "", f"SSE body does not end with a blank line: {tail[-200:]!r}"
    events = Events()
    for bi, block in enumerate(blocks):
        data = []
        for line in block.split("\n"):
            if line.startswith(":"):
                events.comments += 1
                continue
            assert line.startswith("data: "), f"SSE line is not `data: ...`: {line[:200]!r}"
            data.append(line[len("data: "):])
        if not data:
            continue
        assert len(data) == 1, f"SSE event with {len(data)} data lines (must be exactly one): {block[:300]!r}"
        shapes.check_compact_json(data[0], f"event[{len(events)}]")
        ev = shapes.strict_loads(data[0])
        shapes.event(ev, f"events[{len(events)}]")
        events.append(ev)
    events.raw = raw
    return events


HTTP_DATE_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                          r"\d{4} \d{2}:\d{2}:\d{2} GMT$")


def check_sse_headers(headers):
    ct = headers.get("Content-Type", "")
    assert ct.split(";")[0].strip() == "text/event-stream", f"Content-Type {ct!r}"
    assert headers.get("Cache-Control") == "no-cache, no-transform", f"Cache-Control {headers.get('Cache-Control')!r}"
    assert headers.get("X-Accel-Buffering") == "no", f"X-Accel-Buffering {headers.get('X-Accel-Buffering')!r}"


def check_response(resp, req_type, params):
    """Validate any /chatkit reply: JSON error shape, JSON result shape, or SSE events."""
    ct = resp.headers.get("Content-Type", "")
    resp.body = None
    resp.events = None
    assert HTTP_DATE_RE.match(resp.headers.get("Date", "")), f"bad or missing Date header {resp.headers.get('Date')!r}"
    if resp.status_code == 200 and ct.startswith("text/event-stream"):
        assert req_type in STREAMING_TYPES, f"{req_type} answered with SSE"
        check_sse_headers(resp.headers)
        resp.events = parse_sse(resp.content)
        resp.events.resp = resp
        shapes.stream_consistency(resp.events)
        return resp
    assert ct.split(";")[0].strip() == "application/json", (
        f"{req_type}: status {resp.status_code} with Content-Type {ct!r}: {resp.content[:300]!r}")
    resp.body = shapes.strict_loads(resp.content)
    if resp.status_code == 200:
        assert req_type not in STREAMING_TYPES, f"{req_type} answered 200 JSON instead of SSE: {resp.body!r:.300}"
        shapes.json_reply(req_type, resp.body, params)
    else:
        shapes.error_body(resp.body)
    return resp


def expect_error(resp, status, code):
    assert resp.status_code == status and resp.body is not None and resp.body.get("code") == code, (
        f"expected {status} {code}, got {resp.status_code} {resp.content[:400]!r}")
    return resp.body


def unsign(v):
    """v with the signature query of every preview_url removed (signed URLs expire, so two
    reads of the same item may differ in it)."""
    if isinstance(v, dict):
        return {k: (x.split("?", 1)[0] if k == "preview_url" and isinstance(x, str) else unsign(x))
                for k, x in v.items()}
    if isinstance(v, list):
        return [unsign(x) for x in v]
    return v


class Client:
    """A ChatKit.js-like client of one tenant (token + agent_id)."""

    def __init__(self, server, tenant):
        self.server = server
        self.tenant = tenant
        self.session = requests.Session()

    def clone(self):
        return Client(self.server, self.tenant)

    def _url(self, agent):
        agent = self.tenant.agent_id if agent is DEFAULT else agent
        return self.server.endpoint + (f"?agent_id={agent}" if agent else "")

    def _headers(self, token, extra=None):
        token = self.tenant.token if token is DEFAULT else token
        h = {"Content-Type": "application/json", "Accept-Language": "en-US"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(extra or {})
        return h

    def post_raw(self, body, token=DEFAULT, agent=DEFAULT, headers=None, timeout=HTTP_TIMEOUT):
        """POST raw bytes (no validation)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        return self.session.post(self._url(agent), data=body, headers=self._headers(token, headers),
                                 timeout=timeout)

    def request(self, body_obj, req_type=None, token=DEFAULT, agent=DEFAULT, timeout=HTTP_TIMEOUT):
        raw = json.dumps(body_obj, ensure_ascii=False).encode("utf-8")
        resp = self.post_raw(raw, token=token, agent=agent, timeout=timeout)
        params = body_obj.get("params") if isinstance(body_obj, dict) else None
        return check_response(resp, req_type or (body_obj.get("type") if isinstance(body_obj, dict) else None),
                              params)

    def call(self, req_type, params, token=DEFAULT, agent=DEFAULT, metadata=None, timeout=HTTP_TIMEOUT):
        """POST {type, params} → validated requests.Response (.body for JSON, .events for SSE)."""
        body = {"type": req_type, "params": params}
        if metadata is not None:
            body["metadata"] = metadata
        return self.request(body, req_type, token=token, agent=agent, timeout=timeout)

    def ok(self, req_type, params, **kw):
        """A non-streaming call that must succeed → its JSON body."""
        r = self.call(req_type, params, **kw)
        assert r.status_code == 200, f"{req_type} → {r.status_code} {r.content[:400]!r}"
        return r.body

    def stream(self, req_type, params, **kw):
        """A streaming call that must answer 200 SSE → Events."""
        r = self.call(req_type, params, **kw)
        assert r.status_code == 200 and r.events is not None, (
            f"{req_type} → {r.status_code} {r.headers.get('Content-Type')} {r.content[:400]!r}")
        return r.events

    # conveniences ---------------------------------------------------------------------

    def create_thread(self, text, **kw):
        """threads.create → (thread_id, events)."""
        ev = self.stream("threads.create", {"input": msg_input(text, **kw)})
        assert ev and ev[0]["type"] == "thread.created", f"first event {ev[:1]!r}"
        return ev[0]["thread"]["id"], ev

    def send(self, thread_id, text, **kw):
        return self.stream("threads.add_user_message", {"thread_id": thread_id, "input": msg_input(text, **kw)})

    def items(self, thread_id, **params):
        return self.ok("items.list", dict(thread_id=thread_id, **params))

    def all_items(self, thread_id):
        """Every visible item, oldest first."""
        out, after = [], None
        for _ in range(100):
            p = {"thread_id": thread_id, "order": "asc", "limit": 50}
            if after:
                p["after"] = after
            page = self.ok("items.list", p)
            out += page["data"]
            if not page["has_more"]:
                return out
            after = page["after"]
        raise AssertionError("items.list does not terminate")

    def get_thread(self, thread_id):
        return self.ok("threads.get_by_id", {"thread_id": thread_id})

    def auth_headers(self, token=DEFAULT):
        token = self.tenant.token if token is DEFAULT else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def put_bytes(self, att_id, data, token=DEFAULT, headers=None, timeout=HTTP_TIMEOUT):
        """PUT the raw bytes of a two-phase upload → requests.Response."""
        h = dict(self.auth_headers(token), **{"Content-Type": "application/octet-stream"})
        h.update(headers or {})
        return self.session.put(f"{self.server.url}/chatkit/upload/{att_id}", data=data,
                                headers=h, timeout=timeout)

    def upload(self, name, mime, data, **kw):
        """attachments.create + PUT: an attachment with its bytes stored → the upload's reply."""
        a = self.ok("attachments.create", {"name": name, "size": len(data), "mime_type": mime}, **kw)
        r = self.put_bytes(a["id"], data)
        assert r.status_code == 200, f"upload → {r.status_code} {r.content[:300]!r}"
        out = r.json()
        assert out["id"] == a["id"] and "upload_descriptor" not in out
        return out

    def list_threads(self, **params):
        return self.ok("threads.list", params)


@pytest.fixture
def make_client(server):
    """make_client(tenant=None) → a Client on the shared server (fresh tenant by default)."""
    def make(tenant=None):
        return Client(server, tenant or server.new_tenant())
    return make


# ------------------------------------------------------------------------------------------
# raw sockets


class RawConn:
    """A plain HTTP/1.1 connection with bounded timeouts, for framing-level tests."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed by the server")
        self.buf += d

    def _take_until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        head = self._take_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        m = re.match(r"^HTTP/1\.[01] (\d{3}) ?(.*)$", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        return int(m.group(1)), headers

    def iter_body(self, headers):
        """Yield body bytes as they arrive (de-chunked)."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = self._take_until(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    self._take_until(b"\r\n")  # no trailers expected
                    return
                data = self._take(size)
                assert self._take(2) == b"\r\n", "chunk not followed by CRLF"
                yield data
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if n:
                yield self._take(n)
        else:  # close-delimited
            if self.buf:
                yield self.buf
                self.buf = b""
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return
                yield d

    def read_response(self, interim=None):
        """The next final response; 1xx interim responses are skipped (appended to `interim`)."""
        status, headers = self.read_head()
        while 100 <= status < 200:
            if interim is not None:
                interim.append(status)
            status, headers = self.read_head()
        body = b"".join(self.iter_body(headers))
        return status, headers, body

    def wait_closed(self, timeout):
        """True if the server closes the connection (EOF or reset) within `timeout` seconds.
        Any bytes received before are kept in self.buf."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not d:
                return True
            self.buf += d


def wait_until(pred, timeout=5.0, what="condition", step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
    # (pred's truthy value is returned; AssertionError after timeout seconds)


def check_401(resp):
    assert resp.status_code == 401, f"expected 401, got {resp.status_code} {resp.content[:300]!r}"
    assert resp.headers.get("WWW-Authenticate") == "Bearer", resp.headers
    body = resp.json()
    assert body["code"] == "unauthorized" and body["error"], body
    return body


def build_request(method, path, body=b"", headers=None, host="127.0.0.1"):
    h = {"Host": host}
    if body or method == "POST":
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return head.encode("latin-1") + body


class RawStream:
    """A streaming /chatkit request read incrementally over its own socket, so a test can
    stop reading and drop the connection (what ChatKit.js's stop button does)."""

    def __init__(self, server, tenant, req_type, params, timeout=10.0):
        body = json.dumps({"type": req_type, "params": params}, ensure_ascii=False).encode()
        self.conn = RawConn(server.port, timeout=timeout)
        self.conn.send(build_request("POST", f"/chatkit?agent_id={tenant.agent_id}", body, {
            "Authorization": f"Bearer {tenant.token}", "Content-Type": "application/json"}))
        self.status, self.headers = self.conn.read_head()
        self.raw = b""
        self.events = Events()
        self.comments = 0
        self.finished = False
        self._body = self.conn.iter_body(self.headers) if self.status == 200 else None

    def _pump(self):
        """Read one more piece; parse every complete block. False at the end of the body."""
        try:
            piece = next(self._body)
        except StopIteration:
            self.finished = True
            return False
        self.raw += piece
        complete = self.raw[:self.raw.rfind(b"\n\n") + 2] if b"\n\n" in self.raw else b""
        evs = parse_sse(complete) if complete else Events()
        new = evs[len(self.events):]
        self.events.extend(new)
        self.comments = evs.comments
        return True

    def wait_for(self, pred, what="event"):
        """Read until pred(events) holds; returns the events so far."""
        while not pred(self.events):
            if not self._pump():
                raise AssertionError(f"stream ended before {what}; events: {[e['type'] for e in self.events]}")
        return self.events

    def read_all(self):
        while self._pump():
            pass
        final = parse_sse(self.raw)
        shapes.stream_consistency(final)
        final.comments = final.comments
        self.events = final
        return final

    def close(self):
        self.conn.close()


# ---- the mock LLM upstream (tests/fixtures/mock_llm.py) ----------------------------------

MOCK_LLM = Path(__file__).resolve().parent.parent / "fixtures" / "mock_llm.py"


@pytest.fixture(scope="module")
def mock():
    """The mock upstream's base URL (Chat Completions, Responses and Anthropic routes)."""
    p = subprocess.Popen(["/usr/bin/python3", str(MOCK_LLM)], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    try:
        port = int(p.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        p.terminate()
        p.wait(timeout=10)


def mock_get(mock, path):
    with urllib.request.urlopen(mock + path, timeout=5) as r:
        return json.loads(r.read())


def text_of(events):
    """The assistant text streamed in these events (the text_delta updates joined)."""
    return "".join(e["update"]["delta"] for e in events
                   if e.get("type") == "thread.item.updated"
                   and e["update"].get("type") == "assistant_message.content_part.text_delta")


def error_of(events):
    """The one error event of a stream."""
    errs = [e for e in events if e["type"] == "error"]
    assert len(errs) == 1, [e["type"] for e in events]
    return errs[0]
