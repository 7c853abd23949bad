"""`chatkitd mcp-demo`: the bundled MCP server on stdio (reference mcp-and-llm.md §2.1-2.5).

Drives the real binary over pipes exactly as an MCP client does: one compact JSON-RPC message
per line. Every line the server writes must be compact JSON (shapes.check_compact_json) and
every widget it emits must pass shapes.widget_root. CHATKITD_WRAP (e.g. valgrind) is honoured.
"""

import base64
import datetime as dt
import json
import queue
import re
import subprocess
import threading

import pytest

import shapes
from conftest import WRAP, base_env, chatkitd_bin, sanitizer_report

WIDGET_MIME = "application/vnd.ui.widget+json"
TOOLS = {"get_weather", "get_forecast", "echo", "get_time"}
MAX_LINE = 1 << 20
WAIT_S = 60.0 if WRAP else 10.0
TEMP = r"-?\d+°C"


class McpProc:
    """One `chatkitd mcp-demo` child; lines from its stdout arrive on a queue."""

    def __init__(self, tmp_path, args=("mcp-demo",)):
        self.log_path = tmp_path / f"mcp-demo-{id(self)}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(WRAP + [chatkitd_bin(), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, cwd=tmp_path,
                                     env=base_env())
        self.lines = queue.Queue()
        self.next_id = 1
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put(raw)
        self.lines.put(None)

    def send_raw(self, data: bytes):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, obj):
        self.send_raw(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")

    def recv(self, timeout=WAIT_S):
        raw = self.lines.get(timeout=timeout)
        assert raw is not None, f"server closed stdout; log:\n{self.stderr()}"
        assert raw.endswith(b"\n")
        text = raw[:-1].decode("utf-8")
        shapes.check_compact_json(text, "line")
        msg = shapes.strict_loads(text)
        assert msg.get("jsonrpc") == "2.0", msg
        return msg

    def nothing_pending(self):
        """No line waiting (notifications must not be answered): checked with a ping."""
        pid = self.request("ping")
        assert pid["result"] == {}, pid

    def request(self, method, params=None, expect_error=False):
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        r = self.recv()
        assert r.get("id") == rid, f"expected the answer to {rid}, got {r}"
        assert ("error" in r) == expect_error, r
        return r

    def initialize(self, version="2025-11-25"):
        r = self.request("initialize", {"protocolVersion": version, "capabilities": {},
                                        "clientInfo": {"name": "pytest", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return r["result"]

    def call(self, name, arguments=None):
        params = {"name": name}
        if arguments is not None:
            params["arguments"] = arguments
        res = self.request("tools/call", params)["result"]
        check_call_result(res)
        return res

    def close(self, expect_rc=0):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = self.proc.wait(timeout=WAIT_S)
        rest = []
        while True:
            line = self.lines.get(timeout=WAIT_S)
            if line is None:
                break
            rest.append(line)
        self.log.close()
        assert not rest, f"unexpected output after the last request: {rest!r:.500}"
        rep = sanitizer_report(self.stderr())
        assert rep is None, f"sanitizer/valgrind report:\n{rep}"
        assert rc == expect_rc, f"exit code {rc}; log:\n{self.stderr()}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()

    def stderr(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def mcp(tmp_path):
    procs = []

    def start(args=("mcp-demo",)):
        p = McpProc(tmp_path, args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


@pytest.fixture
def srv(mcp):
    p = mcp()
    p.initialize()
    yield p
    p.close()


# ------------------------------------------------------------------------------------------
# helpers


def check_call_result(res):
    shapes.keys(res, "result", ["content"], ["isError", "structuredContent", "_meta"])
    assert isinstance(res["content"], list) and res["content"], res
    for i, b in enumerate(res["content"]):
        p = f"result.content[{i}]"
        if b.get("type") == "text":
            shapes.keys(b, p, ["type", "text"])
            shapes.string(b, "text", p)
        else:
            shapes.keys(b, p, ["type", "resource"])
            assert b["type"] == "resource", b
            r = b["resource"]
            assert ("text" in r) != ("blob" in r), r
            shapes.keys(r, f"{p}.resource", ["uri", "mimeType", "text" if "text" in r else "blob"])
    if "isError" in res:
        assert isinstance(res["isError"], bool)


def text_of(res):
    texts = [b["text"] for b in res["content"] if b["type"] == "text"]
    assert len(texts) == 1, res
    return texts[0]


def widgets_of(res):
    """The widget blocks (§2.3 rule), decoded from text or base64 blob: [(uri, payload, how)]."""
    out = []
    for b in res["content"]:
        if b["type"] != "resource":
            continue
        r = b["resource"]
        assert r["uri"].startswith("ui://") and r["mimeType"] == WIDGET_MIME, r
        if "text" in r:
            raw, how = r["text"], "text"
        else:
            raw, how = base64.b64decode(r["blob"], validate=True).decode("utf-8"), "blob"
        shapes.check_compact_json(raw, "widget json")
        payload = shapes.strict_loads(raw)
        shapes.keys(payload, "payload", ["widget", "copy_text"])
        assert isinstance(payload["copy_text"], str) and payload["copy_text"]
        shapes.no_nulls(payload["widget"], "widget")
        shapes.widget_root(payload["widget"])
        for comp in walk(payload["widget"]):
            if comp["type"] == "Icon":
                shapes.icon(comp.get("name"), "Icon.name")
            if "status" in comp and "icon" in comp["status"]:
                shapes.icon(comp["status"]["icon"], "status.icon")
        out.append((r["uri"], payload, how))
    return out


def walk(c):
    yield c
    for ch in c.get("children", []) or []:
        yield from walk(ch)


def is_error(res):
    return res.get("isError") is True


# ------------------------------------------------------------------------------------------
# lifecycle


def test_initialize_and_tools_list(srv):
    lst = srv.request("tools/list")["result"]
    shapes.keys(lst, "result", ["tools"], ["nextCursor"])
    assert "nextCursor" not in lst
    tools = {t["name"]: t for t in lst["tools"]}
    assert set(tools) == TOOLS and len(lst["tools"]) == len(TOOLS)
    for name, t in tools.items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name)
        shapes.keys(t, name, ["name", "description", "inputSchema"], ["title", "annotations"])
        assert t["inputSchema"]["type"] == "object" and isinstance(t["inputSchema"]["properties"], dict)
        assert all(r in t["inputSchema"]["properties"] for r in t["inputSchema"].get("required", []))
    assert tools["get_weather"]["inputSchema"]["required"] == ["city"]
    assert tools["get_forecast"]["inputSchema"]["required"] == ["city"]
    days = tools["get_forecast"]["inputSchema"]["properties"]["days"]
    assert days["type"] == "integer" and days["minimum"] == 1 and days["maximum"] == 7 and days["default"] == 5
    assert tools["echo"]["inputSchema"]["required"] == ["message"]
    assert tools["get_time"]["inputSchema"]["properties"] == {}
    # a cursor is accepted and ignored: one page
    assert srv.request("tools/list", {"cursor": "whatever"})["result"] == lst


@pytest.mark.parametrize("asked,answered", [("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"),
                                            ("2025-03-26", "2025-03-26"), ("2024-11-05", "2025-11-25"),
                                            ("2099-01-01", "2025-11-25"), (None, "2025-11-25")])
def test_version_negotiation(mcp, asked, answered):
    p = mcp()
    params = {"capabilities": {}, "clientInfo": {"name": "pytest", "version": "1"}}
    if asked:
        params["protocolVersion"] = asked
    r = p.request("initialize", params)["result"]
    shapes.keys(r, "result", ["protocolVersion", "capabilities", "serverInfo", "instructions"])
    assert r["protocolVersion"] == answered
    assert r["capabilities"] == {"tools": {"listChanged": False}}
    assert r["serverInfo"] == {"name": "chatkitd-demo", "title": "chatkitd demo tools", "version": "0.1.0"}
    assert isinstance(r["instructions"], str) and r["instructions"]
    p.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    p.nothing_pending()
    p.close()


def test_requests_before_initialize_are_answered(mcp):
    p = mcp()
    assert p.request("ping")["result"] == {}
    assert {t["name"] for t in p.request("tools/list")["result"]["tools"]} == TOOLS
    assert text_of(p.call("echo", {"message": "early"})) == "Echo: early"
    p.close()


def test_notifications_get_no_answer(srv):
    srv.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1, "reason": "x"}})
    srv.send({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
    srv.send({"jsonrpc": "2.0", "method": "no/such/notification"})
    srv.send({"jsonrpc": "2.0", "id": 99, "result": {}})  # a response: the server sends no requests
    srv.send_raw(b"\n  \r\n")  # blank lines
    srv.nothing_pending()


def test_eof_exits_zero(mcp):
    p = mcp()
    p.initialize()
    p.close(expect_rc=0)


def test_unterminated_last_line_is_served(mcp):
    p = mcp()
    p.send_raw(b'{"jsonrpc":"2.0","id":"last","method":"ping"}')
    p.proc.stdin.close()
    r = p.recv()
    assert r == {"jsonrpc": "2.0", "id": "last", "result": {}}
    p.close()


def test_extra_argument_is_refused(tmp_path):
    cp = subprocess.run(WRAP + [chatkitd_bin(), "mcp-demo", "extra"], cwd=tmp_path, env=base_env(),
                        stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT_S)
    assert cp.returncode == 2 and cp.stdout == b""


# ------------------------------------------------------------------------------------------
# tools


def test_get_weather(srv):
    res = srv.call("get_weather", {"city": "Paris"})
    assert not is_error(res)
    assert [b["type"] for b in res["content"]] == ["text", "resource"]
    text = text_of(res)
    m = re.fullmatch(rf"Paris: ({TEMP}), ([a-z ]+)", text)
    assert m, text
    [(uri, payload, how)] = widgets_of(res)
    assert uri == "ui://widgets/weather/paris" and how == "text"
    assert payload["copy_text"] == f"Weather in {text}"
    w = payload["widget"]
    assert w["type"] == "Card"
    comps = list(walk(w))
    titles = [c["value"] for c in comps if c["type"] == "Title"]
    assert titles == ["Paris"]
    assert any(c["type"] == "Text" and c["value"] == m.group(1) for c in comps)
    assert any(c["type"] == "Caption" and c["value"].lower() == m.group(2) for c in comps)
    icons = [c for c in comps if c["type"] == "Icon"]
    assert icons
    buttons = [c for c in comps if c["type"] == "Button"]
    assert len(buttons) == 1 and buttons[0]["label"] == "5-day forecast"
    act = buttons[0]["onClickAction"]
    assert act["type"] == "tool:get_forecast" and act["payload"] == {"city": "Paris"}
    assert shapes.find_actions(w) == [act]
    # deterministic, case-insensitive, trimmed
    assert srv.call("get_weather", {"city": "Paris"}) == res
    assert text_of(srv.call("get_weather", {"city": "  paris "})) == text


def test_weather_differs_between_cities(srv):
    cities = ["Paris", "London", "Tokyo", "Lima", "Oslo", "Cairo", "Sydney", "Toronto"]
    texts = [text_of(srv.call("get_weather", {"city": c})).split(": ", 1)[1] for c in cities]
    assert len(set(texts)) >= 4, texts


def test_get_weather_unicode_city(srv):
    res = srv.call("get_weather", {"city": "zürich"})
    text = text_of(res)
    assert text.startswith("Zürich: "), text
    [(uri, payload, _)] = widgets_of(res)
    assert uri == "ui://widgets/weather/z%C3%BCrich"
    assert payload["copy_text"] == f"Weather in {text}"
    assert shapes.find_actions(payload["widget"])[0]["payload"] == {"city": "Zürich"}
    res = srv.call("get_weather", {"city": "New York"})
    assert widgets_of(res)[0][0] == "ui://widgets/weather/new-york"


@pytest.mark.parametrize("days", [None, 1, 3, 7, 3.0])
def test_get_forecast(srv, days):
    args = {"city": "Oslo"} if days is None else {"city": "Oslo", "days": days}
    res = srv.call("get_forecast", args)
    assert not is_error(res)
    n = 5 if days is None else int(days)
    text = text_of(res)
    lines = text.split("\n")
    assert lines[0] == f"{n}-day forecast for Oslo:"
    assert len(lines) == n + 1
    for line in lines[1:]:
        assert re.fullmatch(rf"[A-Za-z0-9 ]+: {TEMP} / {TEMP}, [a-z ]+", line), line
    [(uri, payload, how)] = widgets_of(res)
    assert uri == "ui://widgets/forecast/oslo" and how == "blob"
    w = payload["widget"]
    assert w["type"] == "ListView"
    assert len(w["children"]) == n
    for item, line in zip(w["children"], lines[1:]):
        assert item["type"] == "ListViewItem"
        texts = [c["value"] for c in item["children"] if c["type"] == "Text"]
        day, temps = line.split(": ", 1)
        assert texts == [day, temps]
    assert payload["copy_text"] == f"{n}-day forecast for Oslo: " + "; ".join(lines[1:])
    # today's high is the current temperature of get_weather
    now = re.search(TEMP, text_of(srv.call("get_weather", {"city": "Oslo"}))).group(0)
    assert lines[1].startswith(f"Today: {now} / ")


def test_echo(srv):
    assert text_of(srv.call("echo", {"message": "hi"})) == "Echo: hi"
    msg = 'héllo ✓ "quoted"\nsecond line\ttab \\ back'
    res = srv.call("echo", {"message": msg})
    assert res["content"] == [{"type": "text", "text": "Echo: " + msg}] and not is_error(res)
    assert text_of(srv.call("echo", {"message": ""})) == "Echo: "


def test_get_time(srv):
    for args in (None, {}, {"ignored": 1}):
        res = srv.call("get_time", args)
        assert not is_error(res) and len(res["content"]) == 1
        t = text_of(res)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", t), t
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        assert abs(dt.datetime.now(dt.timezone.utc) - when) < dt.timedelta(minutes=2)


# ------------------------------------------------------------------------------------------
# errors


def test_unknown_tool_is_an_error_result(srv):
    res = srv.call("no_such_tool", {})
    assert is_error(res) and text_of(res) == "Unknown tool: no_such_tool"


@pytest.mark.parametrize("name,args,needle", [
    ("get_weather", None, "city is required"),
    ("get_weather", {}, "city is required"),
    ("get_weather", {"city": 5}, "city must be a string"),
    ("get_weather", {"city": "   "}, "city must not be empty"),
    ("get_weather", {"city": "x" * 101}, "at most 100"),
    ("get_weather", {"city": "a\nb"}, "control characters"),
    ("get_weather", [1], "arguments must be an object"),
    ("get_forecast", {"days": 3}, "city is required"),
    ("get_forecast", {"city": "Oslo", "days": 0}, "days must be an integer from 1 to 7"),
    ("get_forecast", {"city": "Oslo", "days": 8}, "days must be an integer from 1 to 7"),
    ("get_forecast", {"city": "Oslo", "days": 2.5}, "days must be an integer from 1 to 7"),
    ("get_forecast", {"city": "Oslo", "days": "3"}, "days must be an integer from 1 to 7"),
    ("get_forecast", {"city": "Oslo", "days": True}, "days must be an integer from 1 to 7"),
    ("get_forecast", {"city": "Oslo", "days": 10 ** 12}, "days must be an integer from 1 to 7"),
    ("echo", {}, "message is required"),
    ("echo", {"message": ["x"]}, "message must be a string"),
])
def test_invalid_arguments(srv, name, args, needle):
    res = srv.call(name, args)
    assert is_error(res), res
    text = text_of(res)
    assert text.startswith(f"Invalid arguments for tool {name}: ") and needle in text, text
    assert widgets_of(res) == []


def test_protocol_errors(srv):
    def err(r, code, rid):
        shapes.keys(r, "response", ["jsonrpc", "id", "error"])
        shapes.keys(r["error"], "error", ["code", "message"], ["data"])
        assert r["error"]["code"] == code and r["id"] == rid, r
        assert isinstance(r["error"]["message"], str) and r["error"]["message"]

    err(srv.request("resources/list", expect_error=True), -32601, srv.next_id - 1)
    err(srv.request("tools/call", {"arguments": {}}, expect_error=True), -32602, srv.next_id - 1)
    err(srv.request("tools/list", [1, 2], expect_error=True), -32602, srv.next_id - 1)

    srv.send_raw(b'{"jsonrpc":"2.0","id":5,"method":\n')  # malformed: parse error, id null
    err(srv.recv(), -32700, None)
    srv.send_raw(b'{"jsonrpc":"2.0","id":5,"method":"ping"}}\n')  # trailing garbage
    err(srv.recv(), -32700, None)
    srv.send_raw(b'\xff\xfe{}\n')  # not UTF-8
    err(srv.recv(), -32700, None)
    srv.send_raw(b'[{"jsonrpc":"2.0","id":6,"method":"ping"}]\n')  # batches were removed
    err(srv.recv(), -32600, None)
    srv.send_raw(b'42\n')
    err(srv.recv(), -32600, None)
    srv.send({"jsonrpc": "2.0", "id": 1.5, "method": "ping"})
    err(srv.recv(), -32600, None)
    srv.send({"jsonrpc": "2.0", "id": 7})
    err(srv.recv(), -32600, 7)
    srv.send({"jsonrpc": "1.0", "id": 8, "method": "ping"})
    err(srv.recv(), -32600, 8)
    # the server still works and string ids are echoed
    srv.send({"jsonrpc": "2.0", "id": "abc", "method": "ping"})
    assert srv.recv() == {"jsonrpc": "2.0", "id": "abc", "result": {}}


def test_over_long_line_is_dropped(srv):
    # a line just under the cap is served ...
    msg = "y" * (MAX_LINE - 200)
    res = srv.call("echo", {"message": msg})
    assert text_of(res) == "Echo: " + msg
    # ... one over it is answered -32600 and dropped, and the server keeps working
    srv.send_raw(b'{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"echo","arguments":'
                 b'{"message":"' + b"z" * MAX_LINE + b'"}}}\n')
    r = srv.recv()
    assert r["id"] is None and r["error"]["code"] == -32600, r
    assert text_of(srv.call("echo", {"message": "still here"})) == "Echo: still here"
    # a long line that is not even JSON is dropped the same way
    srv.send_raw(b"q" * (3 * MAX_LINE) + b"\n")
    r = srv.recv()
    assert r["id"] is None and r["error"]["code"] == -32600, r
    srv.nothing_pending()


def test_stderr_has_logs_only(mcp):
    p = mcp()
    p.initialize()
    p.call("get_weather", {"city": "Lima"})
    p.send_raw(b"{oops\n")
    p.recv()
    p.close()
    for line in p.stderr().splitlines():
        if line.startswith("=="):  # valgrind, when CHATKITD_WRAP runs it
            continue
        assert line.startswith("ts=") and " level=" in line, line
