"""Every HTTP provider (openai: Chat Completions, openai-responses: Responses, anthropic:
Messages) against the mock upstream (tests/fixtures/mock_llm.py), which speaks each wire format
byte-exactly: text, one tool round, parallel tools, fragmented arguments, retries, failure
after text, a malformed stream, cancellation reaching the upstream, images and text files in
the model input, titles from the model, tool_choice and the model allow-list, per-agent base
URL and key variable, token usage stored per run, and backpressure from a slow client."""
import base64
import json
import socket
import time

import pytest

from conftest import RawStream, error_of, text_of, mock_get, msg_input
from shapes import expect_seq, token

KEY = "sk-test-SECRET-0123456789"
REPLY = r"added:assistant_message part.added( delta)+ part.done done:assistant_message"

PROVIDERS = {
    "openai": ("openai:gpt-test", "/v1/chat/completions"),
    "openai-responses": ("openai-responses:gpt-test", "/v1/responses"),
    "anthropic": ("anthropic:claude-test", "/v1/messages"),
}


def upstream_env(mock):
    return {"OPENAI_BASE_URL": mock + "/v1", "OPENAI_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": mock, "ANTHROPIC_API_KEY": KEY,
            "CHATKIT_LOG_LEVEL": "debug", "CHATKIT_LLM_RETRIES": "0"}


class Setup:
    def __init__(self, server_factory, mock, kind, env=None, agent_args=()):
        mock_get(mock, "/_reset")
        self.mock, self.kind = mock, kind
        self.s = server_factory(env={**upstream_env(mock), **(env or {})})
        self.acct = self.s.new_account()
        ag = self.s.cli("agent", "create", "--account", self.acct, "--name", "p", "--model",
                        PROVIDERS[kind][0], "--instructions", "Be brief.", *agent_args)
        self.c = self.s.client(self.s.new_user(self.acct, ag["id"]))

    def requests(self):
        return mock_get(self.mock, "/_requests")

    def conversation(self, i=-1):
        return conversation(self.kind, self.requests()[i]["body"])


@pytest.fixture(params=list(PROVIDERS))
def kind(request):
    return request.param


@pytest.fixture
def up(server_factory, mock, kind):
    return Setup(server_factory, mock, kind, agent_args=("--tool", "get_current_time"))


def conversation(kind, body):
    """What a request carried, format-neutral: [(role, payload)] where payload is the text, or
    ("call", id, name, args dict), ("result", id, text), ("image", mime, base64)."""
    out = []

    def text_parts(role, content, text_types):
        if isinstance(content, str):
            out.append((role, content))
            return
        for p in content:
            t = p.get("type")
            if t in text_types:
                out.append((role, p["text"]))
            elif t == "image_url":  # chat
                mime, data = p["image_url"]["url"][5:].split(";base64,")
                out.append((role, ("image", mime, data)))
            elif t == "input_image":  # responses
                mime, data = p["image_url"][5:].split(";base64,")
                out.append((role, ("image", mime, data)))
            elif t == "image":  # anthropic
                out.append((role, ("image", p["source"]["media_type"], p["source"]["data"])))
            elif t == "tool_use":
                out.append((role, ("call", p["id"], p["name"], p["input"])))
            elif t == "tool_result":
                c = p["content"]
                out.append(("tool", ("result", p["tool_use_id"],
                                     c if isinstance(c, str) else "".join(b["text"] for b in c))))
            else:
                raise AssertionError(f"unexpected part {p}")

    if kind == "openai":
        for m in body["messages"]:
            if m["role"] == "tool":
                out.append(("tool", ("result", m["tool_call_id"], m["content"])))
                continue
            if m.get("content") is not None:
                text_parts(m["role"], m["content"], ("text",))
            for tc in m.get("tool_calls") or []:
                out.append((m["role"], ("call", tc["id"], tc["function"]["name"],
                                        json.loads(tc["function"]["arguments"]))))
    elif kind == "openai-responses":
        if body.get("instructions"):
            out.append(("system", body["instructions"]))
        for it in body["input"]:
            if it.get("type") == "function_call":
                out.append(("assistant", ("call", it["call_id"], it["name"], json.loads(it["arguments"]))))
            elif it.get("type") == "function_call_output":
                out.append(("tool", ("result", it["call_id"], it["output"])))
            else:
                text_parts(it["role"], it["content"], ("input_text", "output_text"))
    else:
        if body.get("system"):
            out.append(("system", body["system"] if isinstance(body["system"], str)
                        else "".join(b["text"] for b in body["system"])))
        for m in body["messages"]:
            text_parts(m["role"], m["content"], ("text",))
    return out


def wait_until(pred, what, timeout=5):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def usage_rows(setup):
    out = setup.s.cli("usage", "--account", setup.acct, "--json")
    return out["runs"] if isinstance(out, dict) else out


# ---- text ------------------------------------------------------------------------------------

def test_text_turn(up, kind):
    c = up.c
    tid, ev = c.create_thread("hello mock")
    expect_seq(ev, r"thread.created done:user_message stream_options progress " + REPLY
               + r" thread.updated")
    assert text_of(ev) == "Mock reply to: hello mock"
    reqs = up.requests()
    assert len(reqs) == 1
    r = reqs[0]
    assert r["path"] == PROVIDERS[kind][1]
    assert r["body"]["model"] == PROVIDERS[kind][0].split(":", 1)[1]
    assert r["body"]["stream"] is True
    assert "text/event-stream" in r["accept"]
    if kind == "anthropic":
        assert r["x_api_key"].startswith("sk-test-") and r["anthropic_version"] == "2023-06-01"
        assert r["authorization"] == "" and r["body"]["max_tokens"] > 0
    else:
        assert r["authorization"].startswith("Bearer s") and r["x_api_key"] == ""
    assert up.conversation() == [("system", "Be brief."), ("user", "hello mock")]
    ev = c.send(tid, "again")
    assert text_of(ev) == "Mock reply to: again"
    assert up.conversation() == [("system", "Be brief."), ("user", "hello mock"),
                                 ("assistant", "Mock reply to: hello mock"), ("user", "again")]
    assert KEY not in up.s.log_tail(max_bytes=10 ** 7)


def test_usage_is_stored_per_run(up, kind):
    tid, _ = up.c.create_thread("hello")
    up.c.send(tid, "what time is it?")  # a tool round: two model calls in one run
    rows = usage_rows(up)
    assert len(rows) == 2
    newest, first = rows
    assert first["thread_id"] == newest["thread_id"] == tid
    assert first["model"] == PROVIDERS[kind][0] and first["status"] == "completed"
    assert first["input_tokens"] == 11 and first["output_tokens"] > 0
    assert first["model_calls"] == 1 and first["tool_calls"] == 0
    assert newest["model_calls"] == 2 and newest["tool_calls"] == 1
    # the mock's Chat Completions sends no usage chunk after tool calls (real servers vary)
    assert newest["input_tokens"] == (11 if kind == "openai" else 22)


# ---- tools -----------------------------------------------------------------------------------

def test_tool_round(up, kind):
    tid, ev = up.c.create_thread("what time is it?")
    expect_seq(ev, r"thread.created done:user_message stream_options progress progress " + REPLY
               + r" thread.updated")
    p = ev.of("progress_update")[1]
    assert p["icon"] == "bolt" and p["text"] == "Executing Get current time..."
    assert text_of(ev).startswith("Mock reply to: tool result 20")
    assert [i["type"] for i in up.c.all_items(tid)] == ["user_message", "assistant_message"]
    reqs = up.requests()
    assert len(reqs) == 2
    conv = conversation(kind, reqs[1]["body"])
    call_id = "toolu_mock1" if kind == "anthropic" else "call_mock1"
    assert conv[-2] == ("assistant", ("call", call_id, "get_current_time", {}))
    role, (what, rid, result) = conv[-1]
    assert (role, what, rid) == ("tool", "result", call_id) and result.startswith("20")
    # offered to the model in its format
    tools = reqs[0]["body"]["tools"]
    names = [t.get("name") or t.get("function", {}).get("name") for t in tools]
    assert names == ["get_current_time"]


def test_parallel_tools(up, kind):
    tid, ev = up.c.create_thread("parallel please")
    progress = ev.of("progress_update")
    assert [p["text"] for p in progress] == ["Analyzing your request...",
                                             "Executing Get current time...",
                                             "Executing Get current time..."]
    assert text_of(ev).startswith("Mock reply to: tool result 20")
    conv = up.conversation()
    pre = "toolu_mock" if kind == "anthropic" else "call_mock"
    calls = [x[1] for x in conv if isinstance(x[1], tuple) and x[1][0] == "call"]
    results = [x[1] for x in conv if isinstance(x[1], tuple) and x[1][0] == "result"]
    assert calls == [("call", pre + "1", "get_current_time", {}),
                     ("call", pre + "2", "get_current_time", {"timezone": "UTC"})]
    assert [r[1] for r in results] == [pre + "1", pre + "2"]
    # the next turn's history keeps both calls in one assistant turn, then both results
    up.c.send(tid, "thanks")
    body = up.requests()[-1]["body"]
    if kind == "openai":
        asked = [m for m in body["messages"] if m.get("tool_calls")]
        assert len(asked) == 1 and len(asked[0]["tool_calls"]) == 2
    elif kind == "anthropic":
        uses = [m for m in body["messages"]
                if isinstance(m["content"], list) and any(b["type"] == "tool_use" for b in m["content"])]
        assert len(uses) == 1 and sum(b["type"] == "tool_use" for b in uses[0]["content"]) == 2
    conv = up.conversation()
    kinds = [x[1][0] if isinstance(x[1], tuple) else x[0] for x in conv]
    assert kinds == ["system", "user", "call", "call", "result", "result", "assistant", "user"]


def test_fragmented_arguments_and_unknown_tool(up, kind):
    tid, ev = up.c.create_thread("weather in paris")
    conv = up.conversation()
    call = conv[-2][1]
    assert call[0] == "call" and call[2:] == ("get_weather", {"city": "Paris"})
    assert conv[-1][1][2] == "Error: there is no such tool."
    assert text_of(ev) == "Mock reply to: tool result Error: there is no such tool."


def test_progress_texts_per_tool(up):
    """The seed's texts (streaming.md, tool_progress_text) and valid icons."""
    q = "the quarterly revenue figures for every region of the company in 2025"
    tid, ev = up.c.create_thread("search for " + q)
    progress = [(p["icon"], p["text"]) for p in ev.of("progress_update")]
    assert progress == [("sparkle", "Analyzing your request..."),
                        ("search", 'Searching for "' + q[:47] + '..."...'),
                        ("search", "Finding relevant quotes..."),
                        ("book-open", "Recalling from memory...")]


def test_tool_choice_is_passed_through(up, kind):
    io = {"tool_choice": {"id": "get_current_time"}}
    up.c.create_thread("hello", inference_options=io)
    body = up.requests()[0]["body"]
    want = {"openai": {"type": "function", "function": {"name": "get_current_time"}},
            "openai-responses": {"type": "function", "name": "get_current_time"},
            "anthropic": {"type": "tool", "name": "get_current_time"}}[kind]
    assert body["tool_choice"] == want
    # a tool the agent does not offer is not forced on the model
    up.c.create_thread("hello", inference_options={"tool_choice": {"id": "rm_rf"}})
    assert "tool_choice" not in up.requests()[-1]["body"]


# ---- failures --------------------------------------------------------------------------------

def test_retry_honours_retry_after(server_factory, mock, kind):
    up = Setup(server_factory, mock, kind, env={"CHATKIT_LLM_RETRIES": "2",
                                                "CHATKIT_LLM_RETRY_BASE_MS": "50"})
    t0 = time.monotonic()
    tid, ev = up.c.create_thread("rate once please")
    assert time.monotonic() - t0 >= 0.9
    assert [p["icon"] for p in ev.of("progress_update")] == ["sparkle", "reload"]
    assert text_of(ev) == "Mock reply to: rate once please"
    assert len(up.requests()) == 2
    tid, ev = up.c.create_thread("flaky upstream")
    assert text_of(ev) == "Mock reply to: flaky upstream"


@pytest.mark.parametrize("text", ["cut off now", "mid error now"])
def test_failure_after_text_keeps_it(up, text):
    tid, ev = up.c.create_thread(text)
    e = error_of(ev)
    assert e["code"] == "custom" and e["allow_retry"] is True
    items = up.c.all_items(tid)
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]
    assert items[1]["content"][0]["text"] == text_of(ev) != ""
    assert usage_rows(up)[0]["status"] == "failed"


@pytest.mark.parametrize("text,status", [("boom", "500"), ("bad key", "401")])
def test_http_errors(up, text, status):
    tid, ev = up.c.create_thread(text)
    e = error_of(ev)
    assert status in e["message"] and KEY not in e["message"]
    assert [i["type"] for i in up.c.all_items(tid)] == ["user_message"]


def test_garbage_stream(up):
    tid, ev = up.c.create_thread("garbage please")
    assert "malformed" in error_of(ev)["message"]
    assert up.s.alive()


def test_cancel_aborts_upstream(up):
    tid, _ = up.c.create_thread("hello")
    rs = RawStream(up.s, up.c.tenant, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("slow please")})
    try:
        rs.wait_for(lambda evs: sum(1 for e in evs if token(e) == "delta") >= 1, "a text delta")
    finally:
        rs.close()
    wait_until(lambda: mock_get(up.mock, "/_disconnects")["count"] >= 1,
               "the upstream request was not aborted")
    wait_until(lambda: len(up.c.all_items(tid)) >= 4, "the partial answer was not kept")
    assert up.c.all_items(tid)[3]["type"] == "assistant_message"
    wait_until(lambda: len(usage_rows(up)) == 2, "the cancelled run was not recorded")
    assert usage_rows(up)[0]["status"] == "cancelled"
    # the next request carries the kept text and the cancel note
    up.c.send(tid, "next")
    conv = up.conversation()
    assert conv[-3][0] == "assistant" and conv[-3][1].startswith("Mock")
    assert "cancelled" in conv[-2][1] and conv[-1] == ("user", "next")


# ---- model input: attachments ------------------------------------------------------------------

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


def attach(up, name, mime, data):
    """An uploaded attachment (attachments.create + PUT of its bytes)."""
    return up.c.upload(name, mime, data)["id"]


def test_images_and_text_files_reach_the_model(up, kind):
    img = attach(up, "dot.png", "image/png", PNG)
    txt = attach(up, "notes.txt", "text/plain", "line one\nligne deux é\n".encode())
    pdf = attach(up, "report.pdf", "application/pdf", b"%PDF-1.4 not read")
    tid, ev = up.c.create_thread("describe these", attachments=[img, txt, pdf])
    conv = up.conversation()
    user = [p for r, p in conv if r == "user"]
    texts = [p for p in user if isinstance(p, str)]
    images = [p for p in user if isinstance(p, tuple) and p[0] == "image"]
    assert images == [("image", "image/png", base64.b64encode(PNG).decode())]
    joined = "\n".join(texts)
    assert joined.startswith("describe these")
    assert "[file: notes.txt]\nline one\nligne deux é\n" in joined
    assert "[attachment: report.pdf (application/pdf)]" in joined
    assert "[image: dot.png]" in joined
    # a later turn still shows the model the image
    up.c.send(tid, "and now?")
    assert any(isinstance(p, tuple) and p[0] == "image" for _, p in up.conversation())


def test_text_file_is_cut_at_the_cap(server_factory, mock):
    up = Setup(server_factory, mock, "openai", env={"CHATKIT_ATTACHMENT_TEXT_MAX_BYTES": "10"})
    a = attach(up, "long.txt", "text/plain", ("é" * 20).encode())
    up.c.create_thread("read", attachments=[a])
    text = up.conversation()[-1][1]
    assert "[file: long.txt]\n" + "é" * 5 + "\n[... cut: the file is longer]" in text


# ---- titles, model choice, per-agent credentials ---------------------------------------------

def test_title_from_the_model(server_factory, mock, kind):
    up = Setup(server_factory, mock, kind, env={"CHATKIT_MODEL_TITLES": "1"})
    tid, ev = up.c.create_thread("hello there friend")
    titles = [e["thread"].get("title") for e in ev.of("thread.updated")]
    assert titles[-1] == "Mock title: hello there friend"
    assert up.c.ok("threads.get_by_id", {"thread_id": tid})["title"] == "Mock title: hello there friend"
    reqs = up.requests()
    assert len(reqs) == 2  # the turn and the title request
    # the title request failing falls back to the user's words
    tid, ev = up.c.create_thread("title fails for this one")
    assert ev.of("thread.updated")[-1]["thread"]["title"] == "title fails for this one"
    assert usage_rows(up)[0]["model_calls"] == 2


def test_model_allow_list(server_factory, mock):
    up = Setup(server_factory, mock, "openai",
               agent_args=("--allow-model", "gpt-other", "--allow-model", "anthropic:claude-x"))
    up.c.create_thread("hi", inference_options={"model": "gpt-other"})
    assert up.requests()[-1]["body"]["model"] == "gpt-other"
    up.c.create_thread("hi", inference_options={"model": "anthropic:claude-x"})
    r = up.requests()[-1]
    assert r["path"] == "/v1/messages" and r["body"]["model"] == "claude-x"
    up.c.create_thread("hi", inference_options={"model": "gpt-expensive"})
    assert up.requests()[-1]["body"]["model"] == "gpt-test"  # not allowed: the agent's own


def test_agent_base_url_and_key_variable(server_factory, mock):
    mock_get(mock, "/_reset")
    s = server_factory(env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "AGENT_KEY": "sk-agent-own"})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "a", "--model", "openai:m",
               "--base-url", mock + "/v1", "--api-key-env", "AGENT_KEY")
    c = s.client(s.new_user(acct, ag["id"]))
    tid, ev = c.create_thread("hello")
    assert text_of(ev) == "Mock reply to: hello"
    assert mock_get(mock, "/_requests")[-1]["authorization"] == "Bearer s…"
    ag2 = s.cli("agent", "create", "--account", acct, "--name", "b", "--model", "openai:m",
                "--base-url", mock + "/v1", "--api-key-env", "NOT_SET_ANYWHERE")
    c2 = s.client(s.new_user(acct, ag2["id"]))
    tid, ev = c2.create_thread("hello")
    assert "NOT_SET_ANYWHERE is not set" in error_of(ev)["message"]


def test_default_model_follows_the_keys(server_factory, mock):
    mock_get(mock, "/_reset")
    s = server_factory(env={"ANTHROPIC_BASE_URL": mock, "ANTHROPIC_API_KEY": KEY})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "d")  # model "default"
    c = s.client(s.new_user(acct, ag["id"]))
    tid, ev = c.create_thread("hello")
    assert text_of(ev) == "Mock reply to: hello"
    assert mock_get(mock, "/_requests")[-1]["path"] == "/v1/messages"


# ---- backpressure ----------------------------------------------------------------------------

def test_slow_client_pauses_the_upstream(server_factory, mock):
    """8 MB of text from the model to a client that does not read for a while: the server
    stops reading the model instead of queueing (the slow-reader limit would drop the client),
    and the client gets every byte once it reads."""
    up = Setup(server_factory, mock, "openai")  # slow-reader limit 1 MiB: 8 MB would pass it
    body = json.dumps({"type": "threads.create",
                       "params": {"input": msg_input("flood please")}}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", up.s.port))
    sock.sendall(b"POST /chatkit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + up.c.tenant.token.encode() +
                 b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(3)  # not reading: the server's queue and the kernel buffers fill up
    assert "model stream paused" in up.s.log_tail(max_bytes=10 ** 6)
    sock.settimeout(30)
    data = bytearray()
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed the stream"
        data += chunk
    sock.close()
    assert b"slow SSE reader dropped" not in up.s.log_tail(max_bytes=10 ** 6).encode()
    text = sum(len(json.loads(line[6:])["update"]["delta"])
               for line in data.split(b"\n")
               if line.startswith(b"data: ") and b"text_delta" in line)
    assert text == 8000 * 1000
