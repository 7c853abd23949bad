"""MCP tools through the agent run: the bundled demo server (chatkitd mcp-demo), the project's
widget fixture (tests/fixtures/mcp_widgets.mjs, @modelcontextprotocol/sdk) and the reference
server-everything, all over stdio, driven by the demo model or the mock LLM upstream. Covers:
tools offered to the model, tool results turned into widget items (text and base64 blob)
streamed and persisted, what the model sees of a result, MCP Apps resources and broken widgets
that are not widgets, isError results, a crash mid-call (error to the model, restart, next turn
works), a hang (timeout), progress notifications, and the hidden item keeping mcp_content."""
import json
import shlex
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import chatkitd_bin, error_of, mock_get, text_of
from shapes import token

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "mcp_widgets.mjs"
EVERYTHING = ROOT / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


def demo_cmd():
    return f"{shlex.quote(str(Path(chatkitd_bin()).resolve()))} mcp-demo"


def fixture_cmd():
    assert FIXTURE.exists(), "tests/fixtures/mcp_widgets.mjs is missing"
    assert (ROOT / "node_modules").exists(), "node_modules is missing: run scripts/deps.sh (npm ci)"
    return f"node {shlex.quote(str(FIXTURE))}"


def mcp_setup(server_factory, mock=None, servers=(), env=None, model="openai:m"):
    e = {"CHATKIT_LOG_LEVEL": "debug"}
    if mock:
        mock_get(mock, "/_reset")
        e.update({"OPENAI_BASE_URL": mock + "/v1", "OPENAI_API_KEY": "sk-x"})
    e.update(env or {})
    s = server_factory(env=e)
    acct = s.new_account()
    args = ["agent", "create", "--account", acct, "--name", "mcp", "--model", model]
    for cmd in servers:
        args += ["--mcp-stdio", cmd]
    ag = s.cli(*args)
    return s, s.client(s.new_user(acct, ag["id"]))


def widgets(events):
    return [e["item"] for e in events if token(e) == "done:widget"]


def tool_message(mock, i=-1):
    """The last tool result the model was sent, in Chat Completions form."""
    msgs = mock_get(mock, "/_requests")[i]["body"]["messages"]
    return [m for m in msgs if m["role"] == "tool"][-1]["content"]


def hidden_items(s, thread_id):
    db = sqlite3.connect(s.data_dir / "chatkitd.db")
    try:
        rows = db.execute("SELECT json FROM items WHERE thread_id = ? AND hidden = 1 ORDER BY seq",
                          (thread_id,)).fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) for r in rows]


# ---- the bundled demo server ------------------------------------------------------------

def test_demo_model_shows_the_weather_widget(server_factory):
    s, c = mcp_setup(server_factory, servers=[demo_cmd()], model="demo")
    tid, ev = c.create_thread("What is the weather in Berlin?")
    w = widgets(ev)
    assert len(w) == 1 and w[0]["widget"]["type"] == "Card"
    assert "Berlin" in w[0]["copy_text"]
    texts = [p["text"] for p in ev.of("progress_update")]
    assert texts[:2] == ["Analyzing your request...", "Executing Get weather..."]
    items = c.all_items(tid)
    assert [i["type"] for i in items] == ["user_message", "widget", "assistant_message"]
    assert items[1]["widget"] == w[0]["widget"]
    got = c.ok("threads.get_by_id", {"thread_id": tid})
    assert [i["type"] for i in got["items"]["data"]] == ["user_message", "widget", "assistant_message"]
    # the hidden item keeps the server's whole content
    h = [x for x in hidden_items(s, tid) if "tool_call" in x.get("content", {})]
    assert len(h) == 1
    content = h[0]["content"]["mcp_content"]
    assert any(b["type"] == "resource" and b["resource"]["uri"].startswith("ui://") for b in content)


def test_tools_offered_and_widget_text_to_the_model(server_factory, mock):
    s, c = mcp_setup(server_factory, mock, servers=[demo_cmd()])
    tid, ev = c.create_thread("weather please")  # the mock calls get_weather {"city":"Paris"}
    first = mock_get(mock, "/_requests")[0]["body"]
    names = sorted(t["function"]["name"] for t in first["tools"])
    assert {"get_weather", "get_forecast", "echo"} <= set(names)
    gw = [t for t in first["tools"] if t["function"]["name"] == "get_weather"][0]["function"]
    assert gw["parameters"]["type"] == "object" and "city" in gw["parameters"]["properties"]
    w = widgets(ev)
    assert len(w) == 1 and "Paris" in w[0]["copy_text"]
    result = tool_message(mock)
    assert "[widget shown to the user] " + w[0]["copy_text"] in result
    assert text_of(ev).startswith("Mock reply to: tool result")
    # the next turn's history has the widget as its copy_text
    c.send(tid, "thanks")
    msgs = mock_get(mock, "/_requests")[-1]["body"]["messages"]
    assert {"role": "assistant", "content": w[0]["copy_text"]} in msgs


def test_blob_widget_and_plain_tool(server_factory, mock):
    s, c = mcp_setup(server_factory, mock, servers=[demo_cmd()])
    tid, ev = c.create_thread('call tool get_forecast {"city":"Oslo","days":3}')
    w = widgets(ev)
    assert len(w) == 1 and w[0]["widget"]["type"] == "ListView"
    tid, ev = c.create_thread('call tool echo {"message":"hi there"}')
    assert widgets(ev) == []
    assert tool_message(mock) == "Echo: hi there"


# ---- the widget fixture (SDK) ------------------------------------------------------------

def test_fixture_widgets_and_non_widgets(server_factory, mock):
    s, c = mcp_setup(server_factory, mock, servers=[fixture_cmd()])
    tid, ev = c.create_thread('call tool widget_text {"title":"Hello card"}')
    w = widgets(ev)
    assert len(w) == 1 and w[0]["widget"]["type"] == "Card" and w[0]["copy_text"] == "Hello card"
    tid, ev = c.create_thread("call tool widget_blob")
    assert [x["widget"]["type"] for x in widgets(ev)] == ["ListView"]
    for tool in ("mcp_app", "broken_widget", "no_widget_key", "bad_root"):
        tid, ev = c.create_thread(f"call tool {tool}")
        assert widgets(ev) == [], tool
        assert [i["type"] for i in c.all_items(tid)] == ["user_message", "assistant_message"], tool
        assert s.alive()
    log = s.log_tail(max_bytes=10 ** 6)
    assert log.count("skipping a broken widget") >= 3


def test_fixture_error_result_and_pagination(server_factory, mock):
    s, c = mcp_setup(server_factory, mock, servers=[fixture_cmd()])
    tid, ev = c.create_thread("call tool fails")
    assert tool_message(mock).startswith("Error: ")
    names = {t["function"]["name"] for t in mock_get(mock, "/_requests")[0]["body"]["tools"]}
    # every page of the paginated tools/list reached the model
    assert {"widget_text", "widget_blob", "mcp_app", "fails", "slow", "crash"} <= names


def test_crash_mid_call_then_restart(server_factory, mock):
    s, c = mcp_setup(server_factory, mock, servers=[fixture_cmd()])
    tid, ev = c.create_thread("call tool crash")
    assert tool_message(mock).startswith("Error: ")
    assert s.alive()
    tid, ev = c.create_thread('call tool widget_text {"title":"after"}')
    assert [x["copy_text"] for x in widgets(ev)] == ["after"]


def test_hanging_tool_times_out_with_progress(server_factory, mock):
    s, c = mcp_setup(server_factory, mock, servers=[fixture_cmd()],
                 env={"CHATKIT_MCP_CALL_TIMEOUT_MS": "1500"})
    t0 = time.monotonic()
    tid, ev = c.create_thread('call tool slow {"seconds":30}')
    assert time.monotonic() - t0 < 10
    assert tool_message(mock).startswith("Error: ") and "did not answer within" in tool_message(mock)
    progress = ev.of("progress_update")
    assert len(progress) >= 3  # analyzing, executing, and the server's progress notifications
    assert s.alive()


# ---- server-everything -------------------------------------------------------------------

def test_server_everything_stdio(server_factory, mock):
    assert EVERYTHING.exists(), "node_modules is missing: run scripts/deps.sh (npm ci)"
    cmd = f"node {shlex.quote(str(EVERYTHING))} stdio"
    s, c = mcp_setup(server_factory, mock, servers=[cmd], env={"MY_SERVICE_TOKEN": "tok-SECRET-123"})
    tid, ev = c.create_thread('call tool echo {"message":"from chatkitd"}')
    assert tool_message(mock) == "Echo: from chatkitd"
    names = {t["function"]["name"] for t in mock_get(mock, "/_requests")[0]["body"]["tools"]}
    assert "get-sum" in names  # hyphens are valid for every provider: kept
    tid, ev = c.create_thread('call tool get-sum {"a":2,"b":3}')
    assert "5" in tool_message(mock)
    # our secrets are not in a server's environment
    tid, ev = c.create_thread("call tool get-env")
    env = tool_message(mock)
    assert "PATH" in env and "OPENAI_API_KEY" not in env and "tok-SECRET-123" not in env
    # the server's instructions reach the model's system text
    first = mock_get(mock, "/_requests")[0]["body"]["messages"][0]
    assert first["role"] == "system" and len(first["content"]) > 20


def test_unavailable_server_leaves_its_tools_out(server_factory, mock):
    s, c = mcp_setup(server_factory, mock, servers=["/nonexistent/mcp-server --stdio"])
    tid, ev = c.create_thread("hello")
    assert text_of(ev) == "Mock reply to: hello"
    assert "tools" not in mock_get(mock, "/_requests")[0]["body"]
    assert "MCP server unavailable" in s.log_tail(max_bytes=10 ** 6)


def test_demo_tenant_shows_a_widget_offline(tmp_path, server_factory):
    """What the README's run command gives: the demo agent, the demo model and the bundled MCP
    server; a message about the weather gets the weather widget, no network involved."""
    from conftest import Client, Tenant, run_cli
    d = tmp_path / "demo"
    demo = run_cli(["demo"], data_dir=d)
    s = server_factory(data_dir=d)
    c = Client(s, Tenant(demo["account_id"], demo["user_id"], demo["agent_id"], demo["token"]))
    tid, ev = c.create_thread("What's the weather in Lyon?")
    w = widgets(ev)
    assert len(w) == 1 and w[0]["widget"]["type"] == "Card" and "Lyon" in w[0]["copy_text"]
    tid, ev = c.create_thread("what time is it?")  # the built-in tool is there too
    assert text_of(ev).startswith("Thanks, I received: 20")


def test_tool_action_from_a_widget_button(server_factory, mock):
    """A widget button whose action is "tool:get_forecast" calls that MCP tool with the payload
    and shows its widget, with no model round trip."""
    s, c = mcp_setup(server_factory, mock, servers=[demo_cmd()])
    tid, ev = c.create_thread("weather please")
    card = widgets(ev)[0]
    button = [x for x in card["widget"]["children"] if x.get("type") == "Button"][0]
    assert button["onClickAction"]["type"] == "tool:get_forecast"
    n = len(mock_get(mock, "/_requests"))
    ev = c.stream("threads.custom_action", {"thread_id": tid, "item_id": card["id"],
                                            "action": button["onClickAction"]})
    assert [p["text"] for p in ev.of("progress_update")] == ["Executing Get forecast..."]
    w = widgets(ev)
    assert len(w) == 1 and w[0]["widget"]["type"] == "ListView" and "Paris" in w[0]["copy_text"]
    assert len(mock_get(mock, "/_requests")) == n  # the model was not asked
    assert [i["type"] for i in c.all_items(tid)][-1] == "widget"
    # a tool that returns no widget shows its text; an unknown tool is an error
    ev = c.stream("threads.custom_action", {"thread_id": tid, "item_id": card["id"],
                                            "action": {"type": "tool:echo", "payload": {"message": "yo"}}})
    assert text_of(ev) == "Echo: yo"
    ev = c.stream("threads.custom_action", {"thread_id": tid, "item_id": card["id"],
                                            "action": {"type": "tool:rm_rf", "payload": {}}})
    assert "not available" in error_of(ev)["message"]
    # the next model turn knows what the tools returned
    c.send(tid, "thanks")
    msgs = mock_get(mock, "/_requests")[-1]["body"]["messages"]
    assert any(m["role"] == "tool" and m["content"] == "Echo: yo" for m in msgs)


def test_other_actions_reach_the_model_as_hidden_context(server_factory, mock):
    s, c = mcp_setup(server_factory, mock, servers=[demo_cmd()])
    tid, ev = c.create_thread("weather please")
    card = widgets(ev)[0]
    ev = c.stream("threads.custom_action", {"thread_id": tid, "item_id": card["id"],
                                            "action": {"type": "favourite", "payload": {"city": "Paris"}}})
    assert text_of(ev).startswith("Mock reply to: [The user took the action")
    c.send(tid, "and?")
    msgs = mock_get(mock, "/_requests")[-1]["body"]["messages"]
    assert any('"favourite"' in (m.get("content") or "") for m in msgs if m["role"] == "user")


def test_sync_tool_action_updates_the_widget(server_factory, mock):
    s, c = mcp_setup(server_factory, mock, servers=[demo_cmd()])
    tid, ev = c.create_thread("weather please")
    card = widgets(ev)[0]
    out = c.ok("threads.sync_custom_action", {
        "thread_id": tid, "item_id": card["id"],
        "action": {"type": "tool:get_weather", "payload": {"city": "Madrid"}}})
    upd = out["updated_item"]
    assert upd["id"] == card["id"] and upd["type"] == "widget"
    assert "Madrid" in upd["copy_text"] and upd["widget"]["type"] == "Card"
    stored = [i for i in c.all_items(tid) if i["id"] == card["id"]][0]
    assert stored["widget"] == upd["widget"]
    # no widget from the tool: nothing to update
    assert c.ok("threads.sync_custom_action", {
        "thread_id": tid, "item_id": card["id"],
        "action": {"type": "tool:echo", "payload": {"message": "x"}}}) == {}


@pytest.mark.parametrize("kind", ["openai", "openai-responses", "anthropic"])
def test_tool_images_reach_the_model(server_factory, mock, kind):
    model = {"openai": "openai:m", "openai-responses": "openai-responses:m",
             "anthropic": "anthropic:m"}[kind]
    s, c = mcp_setup(server_factory, mock, servers=[fixture_cmd()], model=model,
                     env={"ANTHROPIC_BASE_URL": mock, "ANTHROPIC_API_KEY": "k"})
    tid, ev = c.create_thread("call tool image")
    body = mock_get(mock, "/_requests")[-1]["body"]
    if kind == "openai":
        tool_at = [i for i, m in enumerate(body["messages"]) if m["role"] == "tool"][-1]
        after = body["messages"][tool_at + 1]
        assert after["role"] == "user"
        urls = [p["image_url"]["url"] for p in after["content"] if p["type"] == "image_url"]
        assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,iVBOR")
    elif kind == "openai-responses":
        out = [i for i in body["input"] if i.get("type") == "function_call_output"][-1]["output"]
        assert [p["type"] for p in out] == ["input_text", "input_image"]
        assert out[1]["image_url"].startswith("data:image/png;base64,iVBOR")
    else:
        blocks = [b for m in body["messages"] if isinstance(m["content"], list)
                  for b in m["content"] if b["type"] == "tool_result"][-1]["content"]
        assert [b["type"] for b in blocks] == ["text", "image"]
        assert blocks[1]["source"]["media_type"] == "image/png"
