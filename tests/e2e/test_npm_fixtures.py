"""The MCP servers the end-to-end tests of chatkitd's MCP client rely on, checked on their own
with a tiny MCP client written here (no chatkitd involved):

- tests/fixtures/mcp_widgets.mjs, the project's widget fixture (stdio, paginated tools/list):
  every tool's exact result shape;
- @modelcontextprotocol/server-everything from node_modules over stdio (handshake, echo) and
  over Streamable HTTP on 127.0.0.1 (initialize as SSE, Mcp-Session-Id, tools/call, DELETE).

They come from package.json / package-lock.json, installed by scripts/deps.sh (`npm ci`).
Without node_modules every test here fails, saying so: nothing is skipped.
Every process is started here and stopped by PID (stdin closed, SIGTERM, SIGKILL).
"""
import base64
import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "node_modules"
WIDGETS = REPO / "tests" / "fixtures" / "mcp_widgets.mjs"
EVERYTHING = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
PROTOCOL = "2025-11-25"
WIDGET_MIME = "application/vnd.ui.widget+json"
REQ_TIMEOUT = 20.0
SETUP_HINT = "run the setup first: scripts/deps.sh (it runs `npm ci` at the repo root)"

FIXTURE_TOOLS = {
    "widget_text", "widget_blob", "mcp_app", "broken_widget", "no_widget_key", "bad_root",
    "fails", "slow", "crash", "image", "resource_link", "ask_user",
}


def require_npm_fixtures():
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH; {SETUP_HINT}", pytrace=False)
    need = [EVERYTHING, NODE_MODULES / "@modelcontextprotocol" / "sdk" / "package.json",
            NODE_MODULES / "zod" / "package.json"]
    missing = [str(p.relative_to(REPO)) for p in need if not p.is_file()]
    if missing:
        pytest.fail(f"npm test fixtures missing ({', '.join(missing)}); {SETUP_HINT}", pytrace=False)
    return node


# ------------------------------------------------------------------------------------------
# processes (every one is stopped by PID at teardown)

_procs = []


def _stop(proc):
    """stdio servers: close stdin and give them 3 s to exit; then (or for the HTTP server at
    once) SIGTERM, 5 s, SIGKILL."""
    if proc.poll() is None:
        try:
            if proc.stdin:
                proc.stdin.close()
                proc.wait(timeout=3)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
    if proc in _procs:
        _procs.remove(proc)


@pytest.fixture(autouse=True, scope="module")
def _stop_all_procs():
    yield
    for p in list(_procs):
        _stop(p)


class StdioMcp:
    """Newline-delimited JSON-RPC over a child's stdin/stdout (MCP stdio transport)."""

    def __init__(self, argv, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, cwd=REPO, env=env)
        _procs.append(self.proc)
        self.inbox = queue.Queue()
        self.notifications = []
        self.bad_lines = []
        self.next_id = 1
        # a server->client request: on_request(msg) returns the response's "result" (or a
        # dict with "error"); None answers -32601, as does the default
        self.on_request = None
        self.server_requests = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                self.bad_lines.append(line)
                continue
            self.inbox.put(msg)
        self.inbox.put(None)  # EOF

    def stderr_tail(self):
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")[-2000:]

    def send(self, msg):
        data = json.dumps(msg, separators=(",", ":"), ensure_ascii=False)
        assert "\n" not in data
        self.proc.stdin.write(data.encode() + b"\n")
        self.proc.stdin.flush()

    def notify(self, method, params=None):
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    def request(self, method, params=None, timeout=REQ_TIMEOUT):
        """Returns the response message (with "result" or "error"); notifications that arrive
        meanwhile are appended to self.notifications."""
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer to {method} in {timeout}s; stderr:\n{self.stderr_tail()}")
            try:
                m = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if m is None:
                raise EOFError(f"server closed stdout during {method}; stderr:\n{self.stderr_tail()}")
            assert m.get("jsonrpc") == "2.0", m
            if "method" in m and "id" in m:  # a server->client request
                self.server_requests.append(m)
                res = self.on_request(m) if self.on_request else None
                if res is None:
                    self.send({"jsonrpc": "2.0", "id": m["id"],
                               "error": {"code": -32601, "message": "Method not found"}})
                elif "error" in res:
                    self.send({"jsonrpc": "2.0", "id": m["id"], "error": res["error"]})
                else:
                    self.send({"jsonrpc": "2.0", "id": m["id"], "result": res})
            elif "method" in m:
                self.notifications.append(m)
            elif m.get("id") == rid:
                assert ("result" in m) != ("error" in m), m
                return m
            else:
                raise AssertionError(f"unexpected message {m}")

    def result(self, method, params=None, timeout=REQ_TIMEOUT):
        m = self.request(method, params, timeout)
        assert "result" in m, f"{method}: {m}"
        return m["result"]

    def handshake(self, capabilities=None):
        res = self.result("initialize", {"protocolVersion": PROTOCOL, "capabilities": capabilities or {},
                                         "clientInfo": {"name": "chatkitd-tests", "version": "0.0.1"}})
        assert res["protocolVersion"] == PROTOCOL, res
        self.notify("notifications/initialized")
        return res

    def call(self, name, arguments=None, meta=None, timeout=REQ_TIMEOUT):
        params = {"name": name, "arguments": arguments or {}}
        if meta:
            params["_meta"] = meta
        return self.result("tools/call", params, timeout)

    def stop(self):
        _stop(self.proc)
        self.reader.join(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:  # a write buffered for a dead server
                pass
        self.log.close()
        assert not self.bad_lines, f"non-JSON lines on stdout: {self.bad_lines[:3]}"
        return self.proc.returncode


def start_widgets(tmp_path, name="widgets"):
    node = require_npm_fixtures()
    return StdioMcp([node, str(WIDGETS)], tmp_path / f"{name}.stderr")


@pytest.fixture(scope="module")
def widgets(tmp_path_factory):
    c = start_widgets(tmp_path_factory.mktemp("mcp"))
    try:
        c.handshake()
        yield c
    finally:
        c.stop()


# ------------------------------------------------------------------------------------------
# the widget rule of this project and content-block shapes

def is_widget(block):
    return (block.get("type") == "resource"
            and block["resource"].get("uri", "").startswith("ui://")
            and block["resource"].get("mimeType") == WIDGET_MIME)


def resource_payload(block):
    r = block["resource"]
    if "text" in r:
        assert "blob" not in r
        return r["text"]
    return base64.b64decode(r["blob"], validate=True).decode("utf-8")


def text_block(text):
    return {"type": "text", "text": text}


def widget_block(uri, payload_text):
    return {"type": "resource", "resource": {"uri": uri, "mimeType": WIDGET_MIME, "text": payload_text}}


def png_ok(data):
    """A PNG with its signature, IHDR first, IEND last and every chunk CRC right."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    pos, kinds = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) != crc:
            return False
        kinds.append(kind)
        pos += 12 + n
    return kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and pos == len(data)


# ------------------------------------------------------------------------------------------
# mcp_widgets.mjs

def test_widgets_handshake_and_paginated_tools_list(tmp_path):
    c = start_widgets(tmp_path)
    try:
        init = c.handshake()
        assert init["serverInfo"]["name"] == "chatkitd-widget-fixture"
        assert "tools" in init["capabilities"]
        pages, names, cursor = [], [], None
        while True:
            res = c.result("tools/list", {"cursor": cursor} if cursor else {})
            pages.append(res)
            for t in res["tools"]:
                names.append(t["name"])
                assert t["inputSchema"]["type"] == "object", t
                assert isinstance(t.get("description"), str) and t["description"], t
            cursor = res.get("nextCursor")
            if cursor is None:
                break
            assert isinstance(cursor, str) and cursor
            assert len(pages) < 20, "tools/list never ends"
        assert len(pages) == 4, [len(p["tools"]) for p in pages]  # 3 + 3 + 3 + 3
        assert [len(p["tools"]) for p in pages] == [3, 3, 3, 3]
        assert len(names) == len(set(names))
        assert set(names) == FIXTURE_TOOLS
        by_name = {t["name"]: t for p in pages for t in p["tools"]}
        assert by_name["widget_text"]["inputSchema"]["properties"]["title"]["type"] == "string"
        assert "required" not in by_name["widget_text"]["inputSchema"]
        assert by_name["slow"]["inputSchema"]["properties"]["seconds"]["type"] == "number"
        assert by_name["slow"]["inputSchema"]["required"] == ["seconds"]
        # an invalid cursor is a JSON-RPC error -32602
        bad = c.request("tools/list", {"cursor": "not-a-cursor"})
        assert bad["error"]["code"] == -32602, bad
    finally:
        assert c.stop() == 0  # exits 0 on stdin EOF


def test_widget_text(widgets):
    res = widgets.call("widget_text")
    payload = '{"widget":{"type":"Card","children":[{"type":"Text","value":"Hello"}]},"copy_text":"Hello"}'
    assert res == {"content": [text_block("Card: Hello"), widget_block("ui://widgets/card/1", payload)]}
    assert is_widget(res["content"][1])

    res = widgets.call("widget_text", {"title": "Héllo \"wörld\" ✓"})
    assert res["content"][0] == text_block("Card: Héllo \"wörld\" ✓")
    assert is_widget(res["content"][1])
    assert json.loads(resource_payload(res["content"][1])) == {
        "widget": {"type": "Card", "children": [{"type": "Text", "value": "Héllo \"wörld\" ✓"}]},
        "copy_text": "Héllo \"wörld\" ✓"}


def test_widget_blob(widgets):
    res = widgets.call("widget_blob")
    assert list(res) == ["content"]
    text, block = res["content"]
    assert text == text_block("List: One, Two, Three")
    assert set(block) == {"type", "resource"}
    assert set(block["resource"]) == {"uri", "mimeType", "blob"}
    assert block["resource"]["uri"] == "ui://widgets/list/1"
    assert is_widget(block)
    items = ["One", "Two", "Three"]
    assert json.loads(resource_payload(block)) == {
        "widget": {"type": "ListView",
                   "children": [{"type": "ListViewItem", "children": [{"type": "Text", "value": v}]}
                                for v in items]},
        "copy_text": "One, Two, Three"}


def test_mcp_app_is_not_a_widget(widgets):
    res = widgets.call("mcp_app")
    text, block = res["content"]
    assert text == text_block("MCP App: hello")
    assert block["type"] == "resource"
    assert block["resource"]["uri"] == "ui://apps/hello.html"
    assert block["resource"]["mimeType"] == "text/html;profile=mcp-app"
    assert block["resource"]["text"].startswith("<!DOCTYPE html>")
    assert not is_widget(block)


def test_invalid_widgets(widgets):
    res = widgets.call("broken_widget")
    assert res == {"content": [text_block("Broken widget"),
                               widget_block("ui://widgets/broken/1", '{"widget": {not json')]}
    with pytest.raises(ValueError):
        json.loads(resource_payload(res["content"][1]))

    res = widgets.call("no_widget_key")
    assert res["content"][0] == text_block("No widget key")
    assert is_widget(res["content"][1]) and res["content"][1]["resource"]["uri"] == "ui://widgets/nokey/1"
    doc = json.loads(resource_payload(res["content"][1]))
    assert isinstance(doc, dict) and "widget" not in doc

    res = widgets.call("bad_root")
    assert res == {"content": [text_block("Bad root"), widget_block(
        "ui://widgets/badroot/1", '{"widget":{"type":"Text","value":"x"}}')]}
    assert json.loads(resource_payload(res["content"][1]))["widget"]["type"] not in ("Card", "ListView", "Basic")


def test_fails_is_a_tool_error(widgets):
    assert widgets.call("fails") == {"content": [text_block("fixture tool failed on purpose")], "isError": True}


def test_unknown_tool_and_bad_arguments(widgets):
    # SDK 1.x: both come back as isError results carrying -32602 in the text
    res = widgets.call("no_such_tool")
    assert res["isError"] is True and "-32602" in res["content"][0]["text"], res
    res = widgets.call("slow", {"seconds": "soon"})
    assert res["isError"] is True and "-32602" in res["content"][0]["text"], res


def test_slow_sends_progress(widgets):
    widgets.notifications.clear()
    t0 = time.monotonic()
    res = widgets.call("slow", {"seconds": 1}, meta={"progressToken": "tok-slow"})
    elapsed = time.monotonic() - t0
    assert res == {"content": [text_block("Slept 1 seconds")]}
    assert elapsed >= 0.95, elapsed
    prog = [n["params"] for n in widgets.notifications if n["method"] == "notifications/progress"]
    assert len(prog) == 5, prog
    assert [p["progress"] for p in prog] == [1, 2, 3, 4, 5]
    assert all(p["progressToken"] == "tok-slow" and p["total"] == 5 for p in prog)
    assert prog[-1]["message"] == "tick 5/5"

    widgets.notifications.clear()  # an integer token, and none at all
    widgets.call("slow", {"seconds": 0.4}, meta={"progressToken": 7})
    assert [n["params"]["progressToken"] for n in widgets.notifications] == [7, 7]
    widgets.notifications.clear()
    assert widgets.call("slow", {"seconds": 0.4}) == {"content": [text_block("Slept 0.4 seconds")]}
    assert widgets.notifications == []


def test_slow_cancelled(widgets):
    widgets.notifications.clear()
    rid = widgets.next_id
    widgets.send({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                  "params": {"name": "slow", "arguments": {"seconds": 3}, "_meta": {"progressToken": "c"}}})
    widgets.next_id += 1
    time.sleep(0.5)
    widgets.notify("notifications/cancelled", {"requestId": rid, "reason": "test"})
    # the cancelled call gets no answer; the next request is answered normally
    res = widgets.request("ping", timeout=10)
    assert res["result"] == {}
    time.sleep(0.5)
    assert widgets.inbox.empty()


def test_image(widgets):
    res = widgets.call("image")
    img, text = res["content"]
    assert text == text_block("A 1x1 PNG")
    assert set(img) == {"type", "data", "mimeType"}
    assert img["type"] == "image" and img["mimeType"] == "image/png"
    assert png_ok(base64.b64decode(img["data"], validate=True))


def test_resource_link(widgets):
    res = widgets.call("resource_link")
    assert res == {"content": [
        text_block("See the linked resource"),
        {"type": "resource_link", "uri": "test://fixtures/readme.txt", "name": "readme.txt",
         "title": "Fixture readme", "description": "A linked resource (not embedded)",
         "mimeType": "text/plain"}]}


def test_ask_user_elicitation(tmp_path):
    """ask_user sends elicitation/create (form mode) during the call and returns the answer."""
    c = start_widgets(tmp_path, "ask")
    try:
        c.handshake({"elicitation": {}})  # {} = form mode only
        answers = []
        c.on_request = lambda m: answers.pop(0) if m["method"] == "elicitation/create" else None

        answers.append({"action": "accept", "content": {"vip": True, "name": "Ada", "size": "M", "age": 36}})
        res = c.call("ask_user")
        assert res == {"content": [text_block('accept: {"age":36,"name":"Ada","size":"M","vip":true}')]}, res
        req = c.server_requests[-1]
        assert req["method"] == "elicitation/create"
        p = req["params"]
        assert p["mode"] == "form" and p["message"] == "Who are you?", p
        schema = p["requestedSchema"]
        assert schema["type"] == "object" and schema["required"] == ["name"], schema
        props = schema["properties"]
        assert {k: v["type"] for k, v in props.items()} == {
            "name": "string", "age": "integer", "vip": "boolean", "size": "string"}
        assert props["size"]["enum"] == ["S", "M", "L"]

        answers.append({"action": "accept", "content": {"name": "Bo"}})
        assert c.call("ask_user") == {"content": [text_block('accept: {"name":"Bo"}')]}
        answers.append({"action": "decline"})
        assert c.call("ask_user") == {"content": [text_block("decline")]}
        answers.append({"action": "cancel"})
        assert c.call("ask_user") == {"content": [text_block("cancel")]}
        # the SDK checks accepted content against the schema (name is required)
        answers.append({"action": "accept", "content": {"age": 3}})
        res = c.call("ask_user")
        assert res["isError"] is True and "does not match requested schema" in res["content"][0]["text"], res
        # an error answer (what a client does for a mode it did not declare) fails the call
        answers.append({"error": {"code": -32602, "message": "Unsupported elicitation mode"}})
        res = c.call("ask_user")
        assert res["isError"] is True and "-32602" in res["content"][0]["text"], res
        assert len(c.server_requests) == 6
    finally:
        assert c.stop() == 0


def test_ask_user_without_capability(widgets):
    # the module's client declared no elicitation: the SDK refuses to ask (a tool error)
    res = widgets.call("ask_user")
    assert res["isError"] is True and "elicitation" in res["content"][0]["text"], res


def test_crash_mid_call(tmp_path):
    c = start_widgets(tmp_path, "crash")
    try:
        c.handshake()
        with pytest.raises(EOFError):
            c.call("crash", timeout=10)
        assert c.proc.wait(timeout=10) == 1
        assert "crash tool called" in c.stderr_tail()
    finally:
        c.stop()


# ------------------------------------------------------------------------------------------
# server-everything

def test_everything_stdio_echo(tmp_path):
    node = require_npm_fixtures()
    c = StdioMcp([node, str(EVERYTHING), "stdio"], tmp_path / "everything.stderr")
    try:
        init = c.handshake()
        assert init["serverInfo"]["name"] == "mcp-servers/everything"
        tools = c.result("tools/list")["tools"]
        assert "echo" in {t["name"] for t in tools}
        assert c.call("echo", {"message": "hello"}) == {"content": [text_block("Echo: hello")]}
    finally:
        c.stop()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sse_messages(body):
    """JSON-RPC messages of an SSE body; the SDK's priming event (empty data) is skipped."""
    out = []
    for event in body.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip(" ") for line in event.split("\n") if line.startswith("data:"))
        if data.strip():
            out.append(json.loads(data))
    return out


def _rpc_reply(resp):
    ctype = resp.headers.get("Content-Type", "")
    if ctype.startswith("text/event-stream"):
        msgs = [m for m in _sse_messages(resp.text) if "id" in m and "method" not in m]
        assert len(msgs) == 1, resp.text
        return msgs[0]
    assert ctype.startswith("application/json"), ctype
    return resp.json()


@pytest.fixture
def everything_http(tmp_path):
    node = require_npm_fixtures()
    for attempt in range(3):
        port = _free_port()
        log = open(tmp_path / f"everything-http-{attempt}.log", "wb")
        env = dict(os.environ, PORT=str(port))
        proc = subprocess.Popen([node, str(EVERYTHING), "streamableHttp"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        _procs.append(proc)
        deadline = time.monotonic() + 20
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                up = True
                break
            except OSError:
                time.sleep(0.1)
        if up:
            try:
                yield f"http://127.0.0.1:{port}/mcp"
            finally:
                _stop(proc)
                log.close()
            return
        _stop(proc)
        log.close()
    pytest.fail("server-everything streamableHttp did not start: "
                + (tmp_path / "everything-http-2.log").read_text(errors="replace")[-2000:], pytrace=False)


def test_everything_streamable_http(everything_http):
    url = everything_http
    base = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    t = (5, 20)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                       "clientInfo": {"name": "chatkitd-tests", "version": "0.0.1"}}}
    # both Accept types are mandatory
    r = requests.post(url, json=init, headers={"Content-Type": "application/json",
                                               "Accept": "application/json"}, timeout=t)
    assert r.status_code == 406, (r.status_code, r.text)

    r = requests.post(url, json=init, headers=base, timeout=t)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    sid = r.headers.get("Mcp-Session-Id")
    assert sid, dict(r.headers)
    reply = _rpc_reply(r)
    assert reply["id"] == 1 and reply["result"]["protocolVersion"] == PROTOCOL, reply
    assert reply["result"]["serverInfo"]["name"] == "mcp-servers/everything"

    sess = dict(base, **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL})
    r = requests.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                      headers=sess, timeout=t)
    assert r.status_code == 202, (r.status_code, r.text)

    r = requests.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                 "params": {"name": "echo", "arguments": {"message": "over http"}}},
                      headers=sess, timeout=t)
    assert r.status_code == 200, r.text
    reply = _rpc_reply(r)
    assert reply["id"] == 2 and reply["result"] == {"content": [text_block("Echo: over http")]}, reply

    r = requests.delete(url, headers=sess, timeout=t)
    assert r.status_code == 200, (r.status_code, r.text)
    # the session is gone: the SDK answers 400 (the spec says 404); either means "initialize again"
    r = requests.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=sess, timeout=t)
    assert r.status_code in (400, 404), (r.status_code, r.text)
