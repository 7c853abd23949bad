"""The mock LLM upstream itself (tests/fixtures/mock_llm.py): each of its three wire formats
(Chat Completions, Responses, Anthropic Messages) is valid SSE, reassembles to the expected
text and tool calls, and fails the way its modes promise. Talks to the mock directly; no
chatkitd involved."""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

MOCK = Path(__file__).resolve().parent.parent / "fixtures" / "mock_llm.py"
TIMEOUT = (5, 10)
FORMATS = ["chat", "responses", "anthropic"]
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages"}
TERMINAL = {"chat": "[DONE]", "responses": "response.completed", "anthropic": "message_stop"}


@pytest.fixture(scope="module")
def mock_server():
    p = subprocess.Popen(["/usr/bin/python3", str(MOCK)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        port = int(p.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        p.stdout.close()


@pytest.fixture
def mock(mock_server):
    requests.get(mock_server + "/_reset", timeout=TIMEOUT).raise_for_status()
    return mock_server


# ---- requests in each format ---------------------------------------------------------------

def user_body(fmt, text):
    if fmt == "chat":
        return {"model": "m", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]}
    if fmt == "responses":
        return {"model": "m", "stream": True, "instructions": "Be brief.",
                "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}
    return {"model": "m", "max_tokens": 100, "stream": True, "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}


def tool_result_body(fmt, text, results):
    """A conversation: the user's `text`, the model calling one tool per result, the results."""
    ids = ["call_mock%d" % (i + 1) for i in range(len(results))]
    if fmt == "chat":
        calls = [{"id": c, "type": "function", "function": {"name": "get_current_time", "arguments": "{}"}}
                 for c in ids]
        msgs = [{"role": "user", "content": text}, {"role": "assistant", "content": None, "tool_calls": calls}]
        return {"model": "m", "stream": True,
                "messages": msgs + [{"role": "tool", "tool_call_id": c, "content": r} for c, r in zip(ids, results)]}
    if fmt == "responses":
        items = [{"role": "user", "content": text}]
        items += [{"type": "function_call", "call_id": c, "name": "get_current_time", "arguments": "{}"} for c in ids]
        items += [{"type": "function_call_output", "call_id": c, "output": r} for c, r in zip(ids, results)]
        return {"model": "m", "stream": True, "input": items}
    uses = [{"type": "tool_use", "id": "toolu_mock%d" % (i + 1), "name": "get_current_time", "input": {}}
            for i in range(len(results))]
    blocks = [{"type": "tool_result", "tool_use_id": u["id"], "content": [{"type": "text", "text": r}]}
              for u, r in zip(uses, results)]
    return {"model": "m", "max_tokens": 100, "stream": True,
            "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": uses},
                         {"role": "user", "content": blocks}]}


def post(mock, fmt, body, headers=None):
    r = requests.post(mock + PATHS[fmt], json=body, headers=headers or {}, stream=True, timeout=TIMEOUT)
    return r


# ---- reading the answers -------------------------------------------------------------------

def parse_sse(raw):
    """[(event name or None, data string)] from a whole SSE body. Insists on the mock's own
    framing: `\\n` line endings and every event terminated by a blank line."""
    text = raw.decode("utf-8")
    assert "\r" not in text
    assert text == "" or text.endswith("\n\n"), text[-200:]
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block, "two blank lines in a row"
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            else:
                raise AssertionError("unexpected SSE line %r" % line)
        events.append((name, "\n".join(data)))
    return events


def stream(mock, fmt, body, headers=None):
    r = post(mock, fmt, body, headers)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/event-stream"
    raw = b"".join(r.iter_content(chunk_size=None))
    return parse_sse(raw)


class Answer:
    """A stream reassembled: text, tool calls [(id, name, arguments)], usage (in, out), errors,
    and whether the format's terminal event arrived."""

    def __init__(self, fmt, events):
        self.fmt, self.events = fmt, events
        self.text, self.calls, self.usage, self.errors = "", {}, None, []
        self.stop = None
        self.terminal = bool(events) and (events[-1][1] if fmt == "chat" else events[-1][0]) == TERMINAL[fmt]
        for name, data in events:
            if fmt == "chat" and data == "[DONE]":
                continue
            obj = json.loads(data)
            if fmt != "chat":
                assert obj["type"] == name, (name, obj)
            getattr(self, "read_" + fmt)(obj)

    def call(self, key, call_id=None, name=None):
        c = self.calls.setdefault(key, {"id": None, "name": None, "arguments": ""})
        c["id"] = call_id or c["id"]
        c["name"] = name or c["name"]
        return c

    def call_list(self):
        return [(c["id"], c["name"], c["arguments"]) for _, c in sorted(self.calls.items())]

    def read_chat(self, obj):
        if "error" in obj:
            self.errors.append(obj["error"])
            return
        if obj.get("usage"):
            self.usage = (obj["usage"]["prompt_tokens"], obj["usage"]["completion_tokens"])
        for ch in obj["choices"]:
            d = ch["delta"]
            self.text += d.get("content") or ""
            for tc in d.get("tool_calls") or []:
                fn = tc.get("function") or {}
                self.call(tc["index"], tc.get("id"), fn.get("name"))["arguments"] += fn.get("arguments") or ""
            self.stop = ch["finish_reason"] or self.stop

    def read_responses(self, obj):
        t = obj["type"]
        if t == "error":
            self.errors.append(obj)
        elif t == "response.output_text.delta":
            self.text += obj["delta"]
        elif t == "response.output_item.added" and obj["item"]["type"] == "function_call":
            self.call(obj["output_index"], obj["item"]["call_id"], obj["item"]["name"])
        elif t == "response.function_call_arguments.delta":
            self.call(obj["output_index"])["arguments"] += obj["delta"]
        elif t == "response.function_call_arguments.done":
            assert obj["arguments"] == self.call(obj["output_index"])["arguments"]
        elif t == "response.output_text.done":
            assert obj["text"] == self.text
        elif t == "response.completed":
            u = obj["response"]["usage"]
            self.usage = (u["input_tokens"], u["output_tokens"])
            self.stop = obj["response"]["status"]

    def read_anthropic(self, obj):
        t = obj["type"]
        if t == "error":
            self.errors.append(obj["error"])
        elif t == "message_start":
            self.usage = (obj["message"]["usage"]["input_tokens"], None)
        elif t == "content_block_start" and obj["content_block"]["type"] == "tool_use":
            self.call(obj["index"], obj["content_block"]["id"], obj["content_block"]["name"])
        elif t == "content_block_delta" and obj["delta"]["type"] == "text_delta":
            self.text += obj["delta"]["text"]
        elif t == "content_block_delta" and obj["delta"]["type"] == "input_json_delta":
            self.call(obj["index"])["arguments"] += obj["delta"]["partial_json"]
        elif t == "message_delta":
            self.usage = (self.usage[0], obj["usage"]["output_tokens"])
            self.stop = obj["delta"]["stop_reason"]


def answer(mock, fmt, text_or_body, headers=None):
    body = user_body(fmt, text_or_body) if isinstance(text_or_body, str) else text_or_body
    return Answer(fmt, stream(mock, fmt, body, headers))


def call_ids(fmt, n):
    return ["%s%d" % ("toolu_mock" if fmt == "anthropic" else "call_mock", i + 1) for i in range(n)]


TOOL_STOP = {"chat": "tool_calls", "responses": "completed", "anthropic": "tool_use"}
TEXT_STOP = {"chat": "stop", "responses": "completed", "anthropic": "end_turn"}


# ---- text ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_default_reply(mock, fmt):
    a = answer(mock, fmt, "hello")
    assert a.text == "Mock reply to: hello"
    assert a.usage == (11, 4)  # "Mock ", "reply ", "to: ", "hello"
    assert a.terminal and a.stop == TEXT_STOP[fmt] and not a.calls and not a.errors


@pytest.mark.parametrize("fmt", FORMATS)
def test_long_reply_has_about_eight_deltas(mock, fmt):
    words = " ".join("w%d" % i for i in range(20))
    a = answer(mock, fmt, words)
    assert a.text == "Mock reply to: " + words
    assert 6 <= a.usage[1] <= 12 and a.usage[0] == 11


def test_responses_event_framing(mock):
    ev = stream(mock, "responses", user_body("responses", "hello"))
    objs = [json.loads(d) for _, d in ev]
    assert [o["sequence_number"] for o in objs] == list(range(len(objs)))
    assert [n for n, _ in ev[:4]] == ["response.created", "response.in_progress", "response.output_item.added",
                                      "response.content_part.added"]
    assert [n for n, _ in ev[-4:]] == ["response.output_text.done", "response.content_part.done",
                                       "response.output_item.done", "response.completed"]
    done = objs[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0] == {"type": "output_text", "annotations": [],
                                               "text": "Mock reply to: hello"}
    assert done["usage"]["total_tokens"] == 15


def test_anthropic_event_framing(mock):
    ev = stream(mock, "anthropic", user_body("anthropic", "hello"))
    names = [n for n, _ in ev]
    assert names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 4 + \
        ["content_block_stop", "message_delta", "message_stop"]
    assert ev[2][1] == '{"type": "ping"}'
    start = json.loads(ev[0][1])["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None


def test_chat_framing(mock):
    ev = stream(mock, "chat", user_body("chat", "hello"))
    assert all(n is None for n, _ in ev)
    assert ev[-1][1] == "[DONE]"
    first = json.loads(ev[0][1])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    last = json.loads(ev[-2][1])
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 15


# ---- tool calls ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_what_time_calls_the_tool(mock, fmt):
    a = answer(mock, fmt, "What time is it?")
    assert a.call_list() == [(call_ids(fmt, 1)[0], "get_current_time", "{}")]
    assert a.text == "" and a.terminal and a.stop == TOOL_STOP[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
def test_call_unknown(mock, fmt):
    a = answer(mock, fmt, "call unknown tool")
    assert [(n, args) for _, n, args in a.call_list()] == [("delete_everything", "{}")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_parallel_calls(mock, fmt):
    ev = stream(mock, fmt, user_body(fmt, "parallel please"))
    a = Answer(fmt, ev)
    first, second = call_ids(fmt, 2)
    assert a.call_list() == [(first, "get_current_time", "{}"),
                             (second, "get_current_time", '{"timezone":"UTC"}')]
    assert a.terminal and a.stop == TOOL_STOP[fmt]
    if fmt == "responses":
        done = json.loads(ev[-1][1])["response"]["output"]
        assert [(o["type"], o["id"], o["call_id"]) for o in done] == [("function_call", "fc_mock1", first),
                                                                      ("function_call", "fc_mock2", second)]
    # on the wire: interleaved where the format allows it, sequential blocks for Anthropic
    order = [k for k in (fragment_owner(fmt, d) for _, d in ev) if k is not None]
    if fmt == "anthropic":
        assert order == sorted(order) and set(order) == {0, 1}
    else:
        assert order[:4] == [0, 1, 0, 1]


def fragment_owner(fmt, data):
    """Which call an argument fragment belongs to, or None."""
    if data == "[DONE]":
        return None
    obj = json.loads(data)
    if fmt == "chat":
        tcs = [tc for ch in obj["choices"] for tc in ch["delta"].get("tool_calls") or []]
        return tcs[0]["index"] if tcs and "id" not in tcs[0] else None
    if fmt == "responses":
        return obj["output_index"] if obj["type"] == "response.function_call_arguments.delta" else None
    d = obj.get("delta") or {}
    return obj["index"] if d.get("type") == "input_json_delta" and d["partial_json"] else None


@pytest.mark.parametrize("fmt", FORMATS)
def test_weather_arguments_in_fragments(mock, fmt):
    ev = stream(mock, fmt, user_body(fmt, "weather in Paris?"))
    a = Answer(fmt, ev)
    [(cid, name, args)] = a.call_list()
    assert cid == call_ids(fmt, 1)[0] and name == "get_weather"
    assert json.loads(args) == {"city": "Paris"}
    assert len([d for _, d in ev if fragment_owner(fmt, d) == 0]) >= 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_tool_result_answers_normally(mock, fmt):
    a = answer(mock, fmt, tool_result_body(fmt, "what time is it", ["what time 2025-01-01T00:00:00Z"]))
    assert not a.calls and a.text == "Mock reply to: tool result what time 2025-01-01T00:00:00Z"
    a = answer(mock, fmt, tool_result_body(fmt, "parallel please", ["r1", "r2"]))
    # Anthropic's tool results share one user message: their texts are joined
    assert not a.calls and a.text == "Mock reply to: tool result " + ("r1r2" if fmt == "anthropic" else "r2")


@pytest.mark.parametrize("fmt", FORMATS)
def test_loop_tools_anywhere(mock, fmt):
    a = answer(mock, fmt, tool_result_body(fmt, "loop tools forever", ["r1"]))
    assert [n for _, n, _ in a.call_list()] == ["delete_everything"]
    body = user_body(fmt, "hi")
    if fmt == "chat":
        body["messages"][0]["content"] = "loop tools"
    else:
        body["instructions" if fmt == "responses" else "system"] = "Please loop tools."
    assert len(answer(mock, fmt, body).calls) == 1


def test_string_shapes_of_input(mock):
    assert answer(mock, "responses", {"input": "hello"}).text == "Mock reply to: hello"
    body = {"input": [{"type": "message", "role": "user", "content": "hello"}]}
    assert answer(mock, "responses", body).text == "Mock reply to: hello"
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "image_url"},
                                                      {"type": "text", "text": "lo"}]}]}
    assert answer(mock, "chat", body).text == "Mock reply to: hello"
    body = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "what time"}]}
    assert answer(mock, "anthropic", body).text == "Mock reply to: what time"  # not from the user


# ---- failures ------------------------------------------------------------------------------

def error_shape(fmt, r):
    body = r.json()
    if fmt == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        return body["error"]["type"]
    assert set(body["error"]) >= {"message", "type"}
    if fmt == "responses":
        assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]["type"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("text,status,anthropic_type", [("rate limit please", 429, "rate_limit_error"),
                                                         ("boom", 500, "api_error"),
                                                         ("bad key", 401, "authentication_error")])
def test_http_errors(mock, fmt, text, status, anthropic_type):
    r = post(mock, fmt, user_body(fmt, text))
    assert r.status_code == status
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers.get("Retry-After") == ("1" if status == 429 else None)
    kind = error_shape(fmt, r)
    if fmt == "anthropic":
        assert kind == anthropic_type


@pytest.mark.parametrize("fmt", FORMATS)
def test_fail_then_succeed(mock, fmt):
    assert post(mock, fmt, user_body(fmt, "rate once")).status_code == 429
    assert answer(mock, fmt, "rate once").text == "Mock reply to: rate once"
    flaky = 529 if fmt == "anthropic" else 503
    assert [post(mock, fmt, user_body(fmt, "flaky")).status_code for _ in range(2)] == [flaky, flaky]
    assert answer(mock, fmt, "flaky").text == "Mock reply to: flaky"


@pytest.mark.parametrize("fmt", FORMATS)
def test_mid_stream_error(mock, fmt):
    ev = stream(mock, fmt, user_body(fmt, "mid error"))
    a = Answer(fmt, ev)
    assert a.text == "Before the error. " and not a.terminal and len(a.errors) == 1
    err = a.errors[0]
    if fmt == "responses":
        assert ev[-1][0] == "error"
        assert list(err) == ["type", "code", "message", "param", "sequence_number"]
        assert err["sequence_number"] == len(ev) - 1
    elif fmt == "anthropic":
        assert ev[-1][0] == "error" and err == {"type": "overloaded_error", "message": "Overloaded"}
    else:
        assert err["message"] == "Overloaded"


@pytest.mark.parametrize("fmt", FORMATS)
def test_cut_off(mock, fmt):
    a = answer(mock, fmt, "cut off now")
    assert a.text == "Partial answer" and not a.terminal and not a.errors
    assert a.stop is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_garbage(mock, fmt):
    ev = stream(mock, fmt, user_body(fmt, "garbage please"))
    with pytest.raises(ValueError):
        json.loads(ev[-1][1])


# ---- what the mock records -----------------------------------------------------------------

def test_requests_are_recorded(mock):
    answer(mock, "chat", "hello", {"Authorization": "Bearer sk-secret-0123456789"})
    answer(mock, "anthropic", "hello", {"x-api-key": "sk-ant-secret-0123", "anthropic-version": "2023-06-01"})
    answer(mock, "responses", "hello", {"Authorization": "Bearer short", "x-api-key": "short"})
    reqs = requests.get(mock + "/_requests", timeout=TIMEOUT).json()
    assert [r["path"] for r in reqs] == ["/v1/chat/completions", "/v1/messages", "/v1/responses"]
    assert reqs[0]["authorization"] == "Bearer s…" and reqs[0]["x_api_key"] == ""
    assert reqs[0]["anthropic_version"] == "" and reqs[0]["body"] == user_body("chat", "hello")
    assert reqs[1]["x_api_key"] == "sk-ant-s…" and reqs[1]["authorization"] == ""
    assert reqs[1]["anthropic_version"] == "2023-06-01"
    assert reqs[2]["x_api_key"] == "short" and reqs[2]["authorization"] == "Bearer s…"
    assert all(r["method"] == "POST" for r in reqs)
    requests.get(mock + "/_reset", timeout=TIMEOUT)
    assert requests.get(mock + "/_requests", timeout=TIMEOUT).json() == []


def test_unknown_route(mock):
    r = requests.post(mock + "/v1/completions", json={}, timeout=TIMEOUT)
    assert r.status_code == 404
