"""openai:MODEL agents against a mock Chat Completions upstream (tests/fixtures/mock_llm.py):
text streaming, upstream errors before and after the first delta, an unreachable upstream,
cancellation reaching the upstream, keys kept out of logs and errors."""
import subprocess
import time

import pytest

from conftest import RawStream, error_of, text_of, chatkitd_bin, free_port, mock_get, msg_input
from shapes import expect_seq, token

KEY = "sk-test-SECRET-0123456789"
REPLY = r"progress added:assistant_message part.added( delta)+ part.done done:assistant_message"


@pytest.fixture
def oai(server_factory, mock):
    """A server whose tenant's agent is openai:gpt-test, talking to the mock."""
    mock_get(mock, "/_reset")
    s = server_factory(env={"OPENAI_BASE_URL": mock + "/v1", "OPENAI_API_KEY": KEY,
                            "CHATKIT_LOG_LEVEL": "debug", "CHATKIT_LLM_RETRIES": "0"})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "oai", "--model", "openai:gpt-test",
               "--instructions", "Be brief.")
    t = s.new_user(acct, ag["id"])
    return s, s.client(t)


def test_text_turn(oai, mock):
    s, c = oai
    tid, ev = c.create_thread("hello mock")
    expect_seq(ev, r"thread.created done:user_message stream_options " + REPLY + r" thread.updated")
    assert text_of(ev) == "Mock reply to: hello mock"
    done = [e for e in ev if e["type"] == "thread.item.done"][-1]["item"]
    assert done["content"][0]["text"] == "Mock reply to: hello mock"
    # what the upstream received
    reqs = mock_get(mock, "/_requests")
    assert len(reqs) == 1
    r = reqs[0]
    assert r["path"] == "/v1/chat/completions"
    assert r["body"]["model"] == "gpt-test" and r["body"]["stream"] is True
    assert r["body"]["stream_options"] == {"include_usage": True}
    assert r["body"]["messages"] == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "hello mock"}]
    assert r["authorization"].startswith("Bearer s")
    assert "text/event-stream" in r["accept"]
    # stored, and a second turn works on the same thread
    assert [i["type"] for i in c.all_items(tid)] == ["user_message", "assistant_message"]
    ev = c.send(tid, "again")
    expect_seq(ev, r"done:user_message stream_options " + REPLY)
    # the second turn sends the conversation so far
    second = mock_get(mock, "/_requests")[1]["body"]["messages"]
    assert second == [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "hello mock"},
                      {"role": "assistant", "content": "Mock reply to: hello mock"},
                      {"role": "user", "content": "again"}]


def test_history_includes_cancel_note_and_quotes(oai, mock):
    s, c = oai
    tid, _ = c.create_thread("first")
    rs = RawStream(s, c.tenant, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("slow please")})
    try:
        rs.wait_for(lambda evs: sum(1 for e in evs if token(e) == "delta") >= 1, "a text delta")
    finally:
        rs.close()
    deadline = time.monotonic() + 5
    while len(c.all_items(tid)) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    c.stream("threads.add_user_message",
             {"thread_id": tid, "input": msg_input("next", quoted_text="quoted bit")})
    msgs = mock_get(mock, "/_requests")[-1]["body"]["messages"]
    roles = [m["role"] for m in msgs]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "user"], msgs
    assert msgs[4]["content"].startswith("Mock")  # the partial answer that was kept
    assert "cancelled" in msgs[5]["content"]             # the hidden note reaches the model
    assert msgs[6]["content"] == "> quoted bit\n\nnext"


@pytest.mark.parametrize("text,status,retry", [("rate limit please", "429", True),
                                               ("boom", "500", True),
                                               ("bad key", "401", False)])
def test_http_errors_before_the_stream(oai, text, status, retry):
    s, c = oai
    tid, ev = c.create_thread(text)
    expect_seq(ev, r"thread.created done:user_message stream_options progress error thread.updated")
    e = error_of(ev)
    assert e["code"] == "custom" and status in e["message"] and e["allow_retry"] is retry, e
    assert KEY not in e["message"]
    assert [i["type"] for i in c.all_items(tid)] == ["user_message"]


@pytest.mark.parametrize("text", ["cut off now", "mid error now"])
def test_failure_after_text_keeps_it(oai, text):
    s, c = oai
    tid, ev = c.create_thread(text)
    e = error_of(ev)
    assert e["code"] == "custom"
    items = c.all_items(tid)
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]
    assert items[1]["content"][0]["text"] == text_of(ev) != ""


def test_garbage_stream(oai):
    s, c = oai
    tid, ev = c.create_thread("garbage please")
    assert "malformed" in error_of(ev)["message"]
    assert s.alive()


def test_unreachable_upstream(server_factory):
    s = server_factory(env={"OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
                            "OPENAI_API_KEY": KEY})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "oai", "--model", "openai:x")
    c = s.client(s.new_user(acct, ag["id"]))
    tid, ev = c.create_thread("hello")
    e = error_of(ev)
    assert "could not be reached" in e["message"] and e["allow_retry"] is True


def test_cancel_aborts_upstream(oai, mock):
    s, c = oai
    tid, _ = c.create_thread("hello")
    rs = RawStream(s, c.tenant, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("slow please")})
    try:
        rs.wait_for(lambda evs: sum(1 for e in evs if token(e) == "delta") >= 1, "a text delta")
    finally:
        rs.close()
    deadline = time.monotonic() + 5
    while mock_get(mock, "/_disconnects")["count"] < 1:
        assert time.monotonic() < deadline, "the upstream request was not aborted"
        time.sleep(0.05)
    deadline = time.monotonic() + 5
    while len(c.all_items(tid)) < 4:  # the partial answer is kept (hidden note not listed)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert c.all_items(tid)[3]["type"] == "assistant_message"


def test_key_not_in_logs_or_config(oai):
    s, c = oai
    c.create_thread("bad key")
    c.create_thread("hello")
    assert KEY not in s.log_tail(max_bytes=10 ** 7)
    out = subprocess.run([chatkitd_bin(), "config"],
                         env={"OPENAI_API_KEY": KEY, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and KEY not in out.stdout and '"OPENAI_API_KEY": "***"' in out.stdout


# ---- retries --------------------------------------------------------------------------------

@pytest.fixture
def retrying(server_factory, mock):
    mock_get(mock, "/_reset")
    s = server_factory(env={"OPENAI_BASE_URL": mock + "/v1", "OPENAI_API_KEY": KEY,
                            "CHATKIT_LLM_RETRIES": "2", "CHATKIT_LLM_RETRY_BASE_MS": "50"})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "oai", "--model", "openai:m")
    return s, s.client(s.new_user(acct, ag["id"]))


def test_retry_then_success(retrying, mock):
    s, c = retrying
    tid, ev = c.create_thread("flaky upstream")
    expect_seq(ev, r"thread.created done:user_message stream_options progress progress progress "
                   + REPLY[len("progress "):] + r" thread.updated")
    assert [p["icon"] for p in ev.of("progress_update")] == ["sparkle", "reload", "reload"]
    assert text_of(ev) == "Mock reply to: flaky upstream"
    assert len(mock_get(mock, "/_requests")) == 3


def test_retry_after_is_honoured(retrying, mock):
    s, c = retrying
    t0 = time.monotonic()
    tid, ev = c.create_thread("rate once please")
    took = time.monotonic() - t0
    assert text_of(ev) == "Mock reply to: rate once please"
    assert took >= 0.9, f"Retry-After: 1 was not waited for ({took:.2f} s)"
    assert len(mock_get(mock, "/_requests")) == 2


def test_retries_exhausted(retrying, mock):
    s, c = retrying
    tid, ev = c.create_thread("boom")
    expect_seq(ev, r"thread.created done:user_message stream_options progress progress progress "
                   r"error thread.updated")
    e = error_of(ev)
    assert "500" in e["message"] and e["allow_retry"] is True
    assert len(mock_get(mock, "/_requests")) == 3  # the call and two retries


def test_no_retry_after_text(retrying, mock):
    s, c = retrying
    tid, ev = c.create_thread("mid error now")
    error_of(ev)
    assert len(mock_get(mock, "/_requests")) == 1  # text went out: the failure is final


def test_cancel_during_backoff(server_factory, mock):
    mock_get(mock, "/_reset")
    s = server_factory(env={"OPENAI_BASE_URL": mock + "/v1", "CHATKIT_LLM_RETRIES": "3",
                            "CHATKIT_LLM_RETRY_BASE_MS": "2000"})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "oai", "--model", "openai:m")
    c = s.client(s.new_user(acct, ag["id"]))
    tid, _ = c.create_thread("hello")
    rs = RawStream(s, c.tenant, "threads.add_user_message",
                   {"thread_id": tid, "input": msg_input("boom")})
    try:
        rs.wait_for(lambda evs: any(e.get("icon") == "reload" for e in evs), "a retry notice")
    finally:
        rs.close()
    time.sleep(2.5)  # past the backoff: a cancelled run must not call the upstream again
    assert len(mock_get(mock, "/_requests")) == 2  # "hello" and the first "boom"
    assert s.alive()


def test_timeouts(server_factory, mock):
    """No first byte: a retryable timeout (retried, then reported); silence after text: the
    text is kept and the error is final."""
    mock_get(mock, "/_reset")
    s = server_factory(env={"OPENAI_BASE_URL": mock + "/v1", "CHATKIT_LLM_RETRIES": "1",
                            "CHATKIT_LLM_FIRST_BYTE_TIMEOUT_MS": "400",
                            "CHATKIT_LLM_IDLE_TIMEOUT_MS": "400"})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "oai", "--model", "openai:m")
    c = s.client(s.new_user(acct, ag["id"]))
    t0 = time.monotonic()
    tid, ev = c.create_thread("hang please")
    e = error_of(ev)
    assert "could not be reached" in e["message"] and e["allow_retry"] is True, e
    assert [p["icon"] for p in ev.of("progress_update")] == ["sparkle", "reload"]
    assert time.monotonic() - t0 < 5
    tid, ev = c.create_thread("stall please")
    e = error_of(ev)
    items = c.all_items(tid)
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]
    assert items[1]["content"][0]["text"] == "Before the silence. "


# ---- built-in tools ---------------------------------------------------------------------------

def test_tool_round(server_factory, mock):
    mock_get(mock, "/_reset")
    s = server_factory(env={"OPENAI_BASE_URL": mock + "/v1"})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "oai", "--model", "openai:m",
               "--tool", "get_current_time")
    c = s.client(s.new_user(acct, ag["id"]))
    tid, ev = c.create_thread("what time is it?")
    expect_seq(ev, r"thread.created done:user_message stream_options progress progress "
                   + REPLY[len("progress "):] + r" thread.updated")
    tool_progress = ev.of("progress_update")[1]
    assert tool_progress["icon"] == "bolt" and tool_progress["text"] == "Executing Get current time..."
    assert text_of(ev).startswith("Mock reply to: tool result 20")
    # the call and its result are stored hidden: the client never sees them
    assert [i["type"] for i in c.all_items(tid)] == ["user_message", "assistant_message"]
    reqs = mock_get(mock, "/_requests")
    assert len(reqs) == 2
    tools = reqs[0]["body"]["tools"]
    assert [t["function"]["name"] for t in tools] == ["get_current_time"]
    m = reqs[1]["body"]["messages"]
    assert m[-2]["role"] == "assistant" and m[-2]["tool_calls"][0]["function"] == \
        {"name": "get_current_time", "arguments": "{}"}
    assert m[-1]["role"] == "tool" and m[-1]["tool_call_id"] == "call_mock1"
    assert m[-1]["content"].startswith("20") and m[-1]["content"].endswith("Z")
    # the next turn's history carries the call and its result in order
    c.send(tid, "thanks")
    h = mock_get(mock, "/_requests")[2]["body"]["messages"]
    assert [x["role"] for x in h] == ["user", "assistant", "tool", "assistant", "user"]


def test_unknown_tool_gets_an_error_result(server_factory, mock):
    mock_get(mock, "/_reset")
    s = server_factory(env={"OPENAI_BASE_URL": mock + "/v1"})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "oai", "--model", "openai:m")
    c = s.client(s.new_user(acct, ag["id"]))
    tid, ev = c.create_thread("call unknown tool")
    assert "tools" not in mock_get(mock, "/_requests")[0]["body"]  # the agent has none
    m = mock_get(mock, "/_requests")[1]["body"]["messages"]
    assert m[-1] == {"role": "tool", "tool_call_id": "call_mock1",
                     "content": "Error: there is no such tool."}
    assert text_of(ev) == "Mock reply to: tool result Error: there is no such tool."


def test_demo_model_uses_the_time_tool(server_factory):
    s = server_factory()
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "d", "--tool", "get_current_time")
    c = s.client(s.new_user(acct, ag["id"]))
    tid, ev = c.create_thread("what time is it")
    assert [p["icon"] for p in ev.of("progress_update")] == ["sparkle", "bolt"]
    assert text_of(ev).startswith("Thanks, I received: 20")
    assert [i["type"] for i in c.all_items(tid)] == ["user_message", "assistant_message"]


def test_tool_rounds_are_limited(server_factory, mock):
    mock_get(mock, "/_reset")
    s = server_factory(env={"OPENAI_BASE_URL": mock + "/v1"})
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "oai", "--model", "openai:m",
               "--tool", "get_current_time")
    c = s.client(s.new_user(acct, ag["id"]))
    tid, ev = c.create_thread("loop tools forever")
    e = error_of(ev)
    assert "kept calling tools" in e["message"]
    assert len(mock_get(mock, "/_requests")) == 8  # MAX_TOOL_ROUNDS answers, 7 executed rounds
    assert len(ev.of("progress_update")) == 1 + 7
    assert s.alive()
