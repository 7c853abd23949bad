"""Human-in-the-loop forms (issue 5): the built-in request_human_input tool streams a form
widget and the run waits; a message while the form is pending is stored and answered with the
seed's reminder; human.form_submit / human.best_judgement / human.cancel resume the run with
the answers (validated), replace the form with a read-only summary, and refuse a second
submission; a restart of chatkitd between the form and the submission changes nothing."""
import json

import pytest

from conftest import Client, error_of, mock_get, run_cli, text_of
from shapes import token

FORM = {"title": "Book a table", "description": "Details for the booking",
        "fields": [{"name": "name", "label": "Your name", "type": "text", "required": True},
                   {"name": "email", "label": "Email", "type": "email"},
                   {"name": "guests", "label": "Guests", "type": "number", "default": 2},
                   {"name": "seating", "label": "Seating", "type": "select",
                    "options": ["Inside", "Terrace"]},
                   {"name": "extras", "label": "Extras", "type": "multi_select",
                    "options": ["Cake", "Flowers"]},
                   {"name": "kids", "label": "Children", "type": "checkbox"},
                   {"name": "day", "label": "Date", "type": "date", "required": True}]}
ASK = "call tool request_human_input " + json.dumps(FORM)
PENDING = "Please submit the form above before sending more messages."


def human_setup(server_factory, mock, data_dir=None, agent_args=()):
    mock_get(mock, "/_reset")
    env = {"OPENAI_BASE_URL": mock + "/v1", "OPENAI_API_KEY": "sk-x"}
    s = server_factory(env=env, data_dir=data_dir)
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "h", "--model", "openai:m",
               "--tool", "request_human_input", *agent_args)
    return s, s.client(s.new_user(acct, ag["id"])), env


def walk(node):
    yield node
    for ch in node.get("children", []) if isinstance(node, dict) else []:
        yield from walk(ch)


def ask(c):
    tid, ev = c.create_thread(ASK)
    forms = [e["item"] for e in ev if token(e) == "done:widget"]
    assert len(forms) == 1, [e["type"] for e in ev]
    assert not [e for e in ev if token(e) == "done:assistant_message"]  # the run waits
    form = forms[0]
    submit = [n for n in walk(form["widget"]) if n.get("type") == "Form"][0]["onSubmitAction"]
    assert submit["type"] == "human.form_submit"
    return tid, form, submit["payload"]["interaction_id"]


def act(c, tid, form, kind, payload):
    return c.stream("threads.custom_action", {"thread_id": tid, "item_id": form["id"],
                                              "action": {"type": kind, "payload": payload}})


def test_form_submit_resumes_the_run(server_factory, mock):
    s, c, _ = human_setup(server_factory, mock)
    tid, form, iid = ask(c)
    kinds = {n.get("type") for n in walk(form["widget"])}
    assert {"Card", "Form", "Input", "Select", "Checkbox", "DatePicker", "Button"} <= kinds
    actions = [n["onClickAction"]["type"] for n in walk(form["widget"]) if n.get("onClickAction")]
    assert sorted(actions) == ["human.best_judgement", "human.cancel"]
    # a message while the form waits: stored, answered with the reminder, no model call
    n = len(mock_get(mock, "/_requests"))
    ev = c.send(tid, "hello?")
    assert text_of(ev) == "" and [e["item"]["content"][0]["text"] for e in ev
                                  if token(e) == "done:assistant_message"] == [PENDING]
    assert len(mock_get(mock, "/_requests")) == n
    assert "hello?" in json.dumps(c.all_items(tid))
    # the submission
    ev = act(c, tid, form, "human.form_submit",
             {"interaction_id": iid, "name": "Ada", "email": "ada@example.com", "guests": "4",
              "seating": "Terrace", "extras": {"Cake": True, "Flowers": False}, "kids": True,
              "day": "2026-12-24"})
    replaced = [e["item"] for e in ev if e["type"] == "thread.item.replaced"]
    assert len(replaced) == 1 and replaced[0]["id"] == form["id"]
    summary = replaced[0]["widget"]
    assert not [n for n in walk(summary) if n.get("type") in ("Form", "Input", "Button")]
    assert "Ada" in json.dumps(summary)
    result = [m for m in mock_get(mock, "/_requests")[-1]["body"]["messages"] if m["role"] == "tool"][-1]
    assert "Your name: Ada" in result["content"] and "Extras: Cake" in result["content"]
    assert text_of(ev).startswith("Mock reply to: tool result")
    stored = [i for i in c.all_items(tid) if i["id"] == form["id"]][0]
    assert stored["widget"] == summary
    # a second submission (another tab, a double click) changes nothing
    n = len(mock_get(mock, "/_requests"))
    ev = act(c, tid, form, "human.form_submit", {"interaction_id": iid, "name": "Bob", "day": "2026-12-25"})
    assert "no longer waiting" in error_of(ev)["message"]
    assert len(mock_get(mock, "/_requests")) == n
    # and messages are answered by the model again
    ev = c.send(tid, "thanks")
    assert text_of(ev) == "Mock reply to: thanks"


def test_invalid_submission_keeps_the_form_open(server_factory, mock):
    s, c, _ = human_setup(server_factory, mock)
    tid, form, iid = ask(c)
    ev = act(c, tid, form, "human.form_submit",
             {"interaction_id": iid, "email": "not-an-email", "seating": "Roof", "day": "2026-13-40"})
    msgs = [e["item"]["content"][0]["text"] for e in ev if token(e) == "done:assistant_message"]
    assert len(msgs) == 1
    for label in ("Your name", "Email", "Seating", "Date"):
        assert label in msgs[0], msgs[0]
    assert not [e for e in ev if e["type"] == "thread.item.replaced"]
    ev = c.send(tid, "still there?")
    assert PENDING in json.dumps(ev)
    ev = act(c, tid, form, "human.form_submit", {"interaction_id": iid, "name": "Ada", "day": "2026-12-24"})
    assert [e for e in ev if e["type"] == "thread.item.replaced"]


@pytest.mark.parametrize("kind,text", [("human.best_judgement", "User requested: use your best judgement"),
                                       ("human.cancel", "User cancelled the interaction")])
def test_best_judgement_and_cancel(server_factory, mock, kind, text):
    s, c, _ = human_setup(server_factory, mock)
    tid, form, iid = ask(c)
    ev = act(c, tid, form, kind, {"interaction_id": iid})
    assert [e for e in ev if e["type"] == "thread.item.replaced"]
    result = [m for m in mock_get(mock, "/_requests")[-1]["body"]["messages"] if m["role"] == "tool"][-1]
    assert result["content"] == text
    assert text_of(ev) == "Mock reply to: tool result " + text


def test_wrong_interaction_id_is_refused(server_factory, mock):
    s, c, _ = human_setup(server_factory, mock)
    tid, form, iid = ask(c)
    ev = act(c, tid, form, "human.cancel", {"interaction_id": "msg_nope"})
    assert "no longer waiting" in error_of(ev)["message"]
    ev = act(c, tid, form, "human.cancel", {"interaction_id": iid})  # still pending
    assert [e for e in ev if e["type"] == "thread.item.replaced"]


def test_restart_between_form_and_submission(server_factory, mock, tmp_path):
    d = tmp_path / "keep"
    s, c, env = human_setup(server_factory, mock, data_dir=d)
    tid, form, iid = ask(c)
    s.stop()
    s2 = server_factory(env=env, data_dir=d)
    c2 = Client(s2, c.tenant)
    ev = act(c2, tid, form, "human.form_submit", {"interaction_id": iid, "name": "Ada", "day": "2026-12-24"})
    assert [e for e in ev if e["type"] == "thread.item.replaced"]
    assert text_of(ev).startswith("Mock reply to: tool result")


def test_invalid_form_from_the_model_is_an_error_result(server_factory, mock):
    s, c, _ = human_setup(server_factory, mock)
    bad = {"title": "x", "fields": [{"name": "a", "type": "select", "options": []}]}
    tid, ev = c.create_thread("call tool request_human_input " + json.dumps(bad))
    result = [m for m in mock_get(mock, "/_requests")[-1]["body"]["messages"] if m["role"] == "tool"][-1]
    assert result["content"].startswith("Error: ")
    assert text_of(ev).startswith("Mock reply to: tool result Error:")


def test_demo_model_books_with_a_form(tmp_path, server_factory):
    from conftest import Tenant
    d = tmp_path / "demo"
    demo = run_cli(["demo"], data_dir=d)
    s = server_factory(data_dir=d)
    c = Client(s, Tenant(demo["account_id"], demo["user_id"], demo["agent_id"], demo["token"]))
    tid, form, iid = ask_demo(c)
    ev = act(c, tid, form, "human.form_submit",
             {"interaction_id": iid, "name": "Ada", "date": "2026-12-24", "guests": 3, "seating": "Inside"})
    assert [e for e in ev if e["type"] == "thread.item.replaced"]
    assert text_of(ev).startswith("Thanks, I received: Your name: Ada")


def ask_demo(c):
    tid, ev = c.create_thread("Please book a table for tonight")
    forms = [e["item"] for e in ev if token(e) == "done:widget"]
    assert len(forms) == 1
    submit = [n for n in walk(forms[0]["widget"]) if n.get("type") == "Form"][0]["onSubmitAction"]
    return tid, forms[0], submit["payload"]["interaction_id"]


def test_structured_input_rendering(server_factory, mock):
    """An agent whose forms are "structured" asks with the protocol's structured_input item
    when every field is a choice or free text; threads.add_structured_input answers it."""
    s, c, _ = human_setup(server_factory, mock, agent_args=("--forms", "structured"))
    form = {"title": "Trip", "fields": [
        {"name": "where", "label": "Where to?", "type": "select", "options": ["Rome", "Oslo"]},
        {"name": "what", "label": "Activities", "type": "multi_select", "options": ["Food", "Art"]},
        {"name": "note", "label": "Anything else", "type": "text"}]}
    tid, ev = c.create_thread("call tool request_human_input " + json.dumps(form))
    si = [e["item"] for e in ev if token(e) == "done:structured_input"]
    assert len(si) == 1 and not [e for e in ev if token(e) == "done:widget"]
    qs = si[0]["inputs"]
    assert [(q["type"], q["id"], q.get("multiple")) for q in qs] == \
        [("multiple_choice", "where", False), ("multiple_choice", "what", True), ("freeform", "note", None)]
    assert PENDING in json.dumps(c.send(tid, "hm?"))
    ev = c.stream("threads.add_structured_input", {
        "thread_id": tid, "item_id": si[0]["id"],
        "input": {"status": "answered", "answers": {"where": {"values": ["Oslo"]},
                                                    "what": {"values": ["Food", "Art"]}}}})
    result = [m for m in mock_get(mock, "/_requests")[-1]["body"]["messages"] if m["role"] == "tool"][-1]
    assert result["content"] == "Where to?: Oslo\nActivities: Food, Art\nAnything else: (no answer)"
    assert text_of(ev).startswith("Mock reply to: tool result Where to?: Oslo")
    assert text_of(c.send(tid, "thanks")) == "Mock reply to: thanks"  # no longer pending
    # a form with other field types still uses the widget
    tid, ev = c.create_thread(ASK)
    assert [e for e in ev if token(e) == "done:widget"]


# ---- MCP elicitation ---------------------------------------------------------------------

def elicit_setup(server_factory, mock, env=None, data_dir=None):
    from test_mcp import fixture_cmd
    mock_get(mock, "/_reset")
    e = {"OPENAI_BASE_URL": mock + "/v1", "OPENAI_API_KEY": "sk-x", **(env or {})}
    s = server_factory(env=e, data_dir=data_dir)
    acct = s.new_account()
    ag = s.cli("agent", "create", "--account", acct, "--name", "e", "--model", "openai:m",
               "--mcp-stdio", fixture_cmd())
    return s, s.client(s.new_user(acct, ag["id"])), e


def ask_elicit(c):
    tid, ev = c.create_thread("call tool ask_user")
    forms = [e["item"] for e in ev if token(e) == "done:widget"]
    assert len(forms) == 1, [token(e) for e in ev]
    submit = [n for n in walk(forms[0]["widget"]) if n.get("type") == "Form"][0]["onSubmitAction"]
    return tid, forms[0], submit["payload"]["interaction_id"]


def last_tool_result(mock):
    return [m for m in mock_get(mock, "/_requests")[-1]["body"]["messages"] if m["role"] == "tool"][-1]["content"]


def test_elicitation_accept(server_factory, mock):
    s, c, _ = elicit_setup(server_factory, mock)
    tid, form, iid = ask_elicit(c)
    kinds = {n.get("type") for n in walk(form["widget"])}
    assert {"Input", "Checkbox", "Select"} <= kinds
    assert PENDING in json.dumps(c.send(tid, "waiting"))
    ev = act(c, tid, form, "human.form_submit",
             {"interaction_id": iid, "name": "Ada", "age": "36", "vip": True, "size": "M"})
    assert [e for e in ev if e["type"] == "thread.item.replaced"]
    result = last_tool_result(mock)
    assert result.startswith("accept")
    got = json.loads(result[result.index("{"):])
    assert got == {"name": "Ada", "age": 36, "vip": True, "size": "M"}
    assert text_of(ev).startswith("Mock reply to: tool result accept")


@pytest.mark.parametrize("kind,answer", [("human.best_judgement", "decline"), ("human.cancel", "cancel")])
def test_elicitation_decline_and_cancel(server_factory, mock, kind, answer):
    s, c, _ = elicit_setup(server_factory, mock)
    tid, form, iid = ask_elicit(c)
    ev = act(c, tid, form, kind, {"interaction_id": iid})
    assert last_tool_result(mock) == answer
    msgs = mock_get(mock, "/_requests")[-1]["body"]["messages"]
    if answer == "decline":  # the model is told the user left it to its judgement
        assert any("judgement" in (m.get("content") or "") for m in msgs if m["role"] == "user")


def test_elicitation_deadline_and_restart(server_factory, mock, tmp_path):
    s, c, env = elicit_setup(server_factory, mock, env={"CHATKIT_MCP_ELICIT_TIMEOUT_MS": "500"})
    tid, form, iid = ask_elicit(c)
    import time
    time.sleep(1.2)  # the server got "cancel"
    ev = act(c, tid, form, "human.form_submit", {"interaction_id": iid, "name": "Ada"})
    assert "expired" in json.dumps(ev)
    assert last_tool_result(mock).startswith("Error: the tool's question to the user expired")
    # a restart between the question and the answer: the same
    d = tmp_path / "restart"
    s2, c2, env2 = elicit_setup(server_factory, mock, data_dir=d)
    tid, form, iid = ask_elicit(c2)
    s2.stop()
    s3 = server_factory(env=env2, data_dir=d)
    c3 = Client(s3, c2.tenant)
    ev = act(c3, tid, form, "human.form_submit", {"interaction_id": iid, "name": "Ada"})
    assert "expired" in json.dumps(ev)
    assert text_of(ev).startswith("Mock reply to: tool result Error:")
