"""The operator command line and bearer-token lifecycle."""

import datetime as dt
import json
import sqlite3
import subprocess
import time

import pytest

import shapes
from conftest import Client, Tenant, base_env, chatkitd_bin, expect_error, free_port, run_cli

ID = shapes.ID_RE


def test_demo_is_idempotent(tmp_path, server_factory):
    d = tmp_path / "demo"
    first = run_cli(["demo"], data_dir=d)
    assert set(first) == {"account_id", "user_id", "agent_id", "token", "url", "login_url"}
    for k in ("account_id", "user_id", "agent_id"):
        assert ID.match(first[k]), first[k]
    assert first["token"] and first["url"].startswith("http")
    assert first["login_url"].startswith("http://127.0.0.1:8080/login?token=ckl_")
    second = run_cli(["demo"], data_dir=d)
    # the same tenant and token; a login link is one-time, so each run prints a new one
    assert second["login_url"] != first["login_url"]
    assert dict(second, login_url=None) == dict(first, login_url=None)
    with sqlite3.connect(d / "chatkitd.db") as db:  # resolved when it runs: demo without keys
        assert db.execute("SELECT model FROM agents WHERE id = ?", (first["agent_id"],)).fetchone() == ("default",)

    s = server_factory(data_dir=d)
    c = Client(s, Tenant(first["account_id"], first["user_id"], first["agent_id"], first["token"]))
    tid, ev = c.create_thread("hello demo")
    assert c.ok("threads.list", {}, agent=None)["data"][0]["id"] == tid  # one agent: agent_id optional


def test_admin_commands(tmp_path, server_factory):
    d = tmp_path / "admin"
    acct = run_cli(["account", "create", "Acme Inc"], data_dir=d)
    assert set(acct) == {"id", "name"} and acct["name"] == "Acme Inc" and ID.match(acct["id"])
    user = run_cli(["user", "create", "--account", acct["id"], "bob"], data_dir=d)
    assert {"id", "account_id", "name"} <= set(user)
    assert user["account_id"] == acct["id"] and user["name"] == "bob" and ID.match(user["id"])
    agent = run_cli(["agent", "create", "--account", acct["id"], "--name", "helper", "--model", "demo"], data_dir=d)
    assert ID.match(agent["id"])
    assert agent.get("account_id", acct["id"]) == acct["id"] and agent.get("name", "helper") == "helper"
    tok = run_cli(["token", "create", "--user", user["id"]], data_dir=d)
    assert {"token", "user_id"} <= set(tok) and tok["user_id"] == user["id"] and "expires_at" not in tok
    tok30 = run_cli(["token", "create", "--user", user["id"], "--ttl", "30d"], data_dir=d)
    exp = dt.datetime.fromisoformat(tok30["expires_at"].replace("Z", "+00:00"))
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((exp - now) - dt.timedelta(days=30)) < dt.timedelta(minutes=5), tok30["expires_at"]
    assert tok30["token"] != tok["token"]
    users2 = run_cli(["user", "create", "--account", acct["id"], "bob"], data_dir=d)
    assert users2["id"] != user["id"]

    s = server_factory(data_dir=d)
    for t in (tok["token"], tok30["token"]):
        c = Client(s, Tenant(acct["id"], user["id"], agent["id"], t))
        c.create_thread("hi")
    assert len(c.list_threads()["data"]) == 2


@pytest.mark.parametrize("args,code", [
    (["user", "create", "--account", "acct_" + "0" * 24, "bob"], 1),
    (["agent", "create", "--account", "acct_" + "0" * 24, "--name", "x", "--model", "demo"], 1),
    (["token", "create", "--user", "usr_" + "0" * 24], 1),
    (["account", "create"], 2),
    (["user", "create", "bob"], 2),
    (["token", "create"], 2),
    (["frobnicate"], 2),
    (["account", "explode", "x"], 2),
    (["token", "create", "--user", "usr_x", "--ttl", "forever"], 2),
])
def test_admin_failures(tmp_path, args, code):
    cp = run_cli(args, data_dir=tmp_path / "d", check=False)
    assert cp.returncode == code, f"{args}: exit {cp.returncode}, stderr {cp.stderr!r}"
    assert cp.stderr.strip(), "the reason must be on stderr"
    assert cp.stdout.strip() == b""


def test_migrate(tmp_path):
    d = tmp_path / "m"
    v1 = run_cli(["migrate"], data_dir=d)
    assert set(v1) == {"schema_version"} and shapes.is_int(v1["schema_version"]) and v1["schema_version"] >= 1
    assert run_cli(["migrate"], data_dir=d) == v1


@pytest.mark.parametrize("var,value", [
    ("CHATKIT_MAX_BODY_BYTES", "abc"),
    ("CHATKIT_IDLE_TIMEOUT_MS", "soon"),
    ("CHATKIT_LOG_LEVEL", "loud"),
    ("CHATKIT_SSE_HEARTBEAT_MS", "-5"),
])
def test_bad_env_value(tmp_path, var, value):
    cmd = [chatkitd_bin(), "serve", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{free_port()}"]
    try:
        cp = subprocess.run(cmd, env=base_env({var: value}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve started despite {var}={value!r}")
    assert cp.returncode == 2, f"exit {cp.returncode}, stderr {cp.stderr!r}"
    assert var.encode() in cp.stderr, cp.stderr


def test_config_masks_secrets(tmp_path):
    secrets = {"OPENAI_API_KEY": "sk-test-SECRET-1", "ANTHROPIC_API_KEY": "sk-ant-SECRET-2",
               "CHATKIT_JWT_SECRET": "jwt-SECRET-3-at-least-thirty-two-bytes",
               "CHATKIT_CLIENT_SECRET": "cs-SECRET-4",
               "CHATKIT_SECRET_KEY": "signing-SECRET-5-at-least-thirty-two-bytes"}
    env = dict(secrets, CHATKIT_MAX_BODY_BYTES="12345", CHATKIT_SSE_HEARTBEAT_MS="777")
    cp = subprocess.run([chatkitd_bin(), "config", "--data-dir", str(tmp_path / "d")], env=base_env(env),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=10)
    assert cp.returncode == 0, cp.stderr
    cfg = json.loads(cp.stdout)
    for k, v in secrets.items():
        assert cfg.get(k) == "***", f"{k} shown as {cfg.get(k)!r}"
        assert v.encode() not in cp.stdout and v.encode() not in cp.stderr
    assert cfg["CHATKIT_MAX_BODY_BYTES"] in (12345, "12345")
    assert cfg["CHATKIT_SSE_HEARTBEAT_MS"] in (777, "777")


def test_token_revoke(server_factory):
    s = server_factory(env={"CHATKIT_AUTH_CACHE_MS": "0"})
    c = s.client(s.new_tenant())
    tid, _ = c.create_thread("hello")
    keep = s.new_user(c.tenant.account_id, c.tenant.agent_id)
    cp = s.cli("token", "revoke", c.tenant.token, want_json=False)
    assert cp.returncode == 0
    expect_error(c.call("threads.list", {}), 401, "unauthorized")
    expect_error(c.call("threads.get_by_id", {"thread_id": tid}), 401, "unauthorized")
    expect_error(c.call("threads.add_user_message", {"thread_id": tid, "input": {
        "content": [{"type": "input_text", "text": "x"}], "attachments": [], "inference_options": {}}}),
        401, "unauthorized")
    # other tokens keep working; a new token for the same user works
    Client(s, keep).list_threads()
    fresh = s.cli("token", "create", "--user", c.tenant.user_id)
    c2 = Client(s, Tenant(c.tenant.account_id, c.tenant.user_id, c.tenant.agent_id, fresh["token"]))
    assert [t["id"] for t in c2.list_threads()["data"]] == [tid]


def test_token_ttl_expires(server_factory):
    s = server_factory(env={"CHATKIT_AUTH_CACHE_MS": "0"})
    acct = s.new_account()
    agent = s.new_agent(acct)
    user = s.cli("user", "create", "--account", acct, "bob")
    t0 = time.monotonic()
    tok = s.cli("token", "create", "--user", user["id"], "--ttl", "1s")
    t1 = time.monotonic()  # the token exists and expires by t1 + 1 s
    assert "expires_at" in tok
    c = Client(s, Tenant(acct, user["id"], agent, tok["token"]))
    r = c.call("threads.list", {})
    if time.monotonic() - t0 < 0.9:  # only meaningful if we are still inside the TTL
        assert r.status_code == 200, r.content
    time.sleep(max(0.0, 1.5 - (time.monotonic() - t1)))  # expiry is time itself: nothing to await
    expect_error(c.call("threads.list", {}), 401, "unauthorized")


def test_auth_cache_bounds_revocation(server_factory):
    s = server_factory(env={"CHATKIT_AUTH_CACHE_MS": "500"})
    c = s.client(s.new_tenant())
    c.list_threads()  # cached now
    s.cli("token", "revoke", c.tenant.token, want_json=False)
    t0 = time.monotonic()
    while True:
        r = c.call("threads.list", {})
        if r.status_code == 401:
            expect_error(r, 401, "unauthorized")
            break
        assert r.status_code == 200
        assert time.monotonic() - t0 < 2.0, "revoked token still accepted 2 s later with a 500 ms auth cache"
        time.sleep(0.05)


def test_listen_port_in_use(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cmd = [chatkitd_bin(), "serve", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{port}"]
        try:
            cp = subprocess.run(cmd, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("serve kept running although its port is taken")
    assert cp.returncode == 1, f"exit {cp.returncode}: {cp.stderr!r}"
    assert cp.stderr.strip()


# ---- agent configuration flags -------------------------------------------------------------

def test_agent_config_flags(tmp_path):
    d = tmp_path / "ag"
    acct = run_cli(["account", "create", "Acme"], data_dir=d)["id"]
    plain = run_cli(["agent", "create", "--account", acct, "--name", "plain"], data_dir=d)
    assert plain["model"] == "default"
    assert plain["config"] == {"mcp_stdio": [], "mcp_http": [], "tools": [], "models": []}
    full = run_cli(["agent", "create", "--account", acct, "--name", "full", "--model", "anthropic:claude-x",
                    "--base-url", "https://llm.example.com/v1", "--api-key-env", "ACME_LLM_KEY_2",
                    "--allow-model", "gpt-4.1", "--allow-model", "openai-responses:o4-mini",
                    "--tool", "get_current_time"], data_dir=d)
    assert full["model"] == "anthropic:claude-x"
    assert full["config"] == {"mcp_stdio": [], "mcp_http": [], "tools": ["get_current_time"],
                              "models": ["gpt-4.1", "openai-responses:o4-mini"],
                              "base_url": "https://llm.example.com/v1", "api_key_env": "ACME_LLM_KEY_2"}
    for model in ("default", "demo", "demo:x", "openai:gpt-4.1-mini", "openai-responses:o3", "anthropic:c"):
        ag = run_cli(["agent", "create", "--account", acct, "--name", "m", "--model", model,
                      "--base-url", "http://127.0.0.1:1", "--api-key-env", "_K"], data_dir=d)
        assert ag["model"] == model and ag["config"]["base_url"] == "http://127.0.0.1:1"
    with sqlite3.connect(d / "chatkitd.db") as db:  # what the server reads
        cfg = json.loads(db.execute("SELECT config_json FROM agents WHERE id = ?", (full["id"],)).fetchone()[0])
    assert cfg == full["config"]


@pytest.mark.parametrize("flags,needle", [
    (["--base-url", "ftp://example.com"], b"--base-url"),
    (["--base-url", "example.com/v1"], b"--base-url"),
    (["--base-url", "https://"], b"--base-url"),
    (["--api-key-env", "sk-proj-abc123"], b"--api-key-env"),  # a key, not a variable name
    (["--api-key-env", "lower_case"], b"--api-key-env"),
    (["--api-key-env", "1ABC"], b"--api-key-env"),
    (["--api-key-env", "A" * 65], b"--api-key-env"),
    (["--api-key-env", ""], b"--api-key-env"),
    (["--allow-model", ""], b"--allow-model"),
    (["--allow-model", "gpt 4"], b"--allow-model"),
    (["--allow-model", "m" * 128], b"--allow-model"),
    (["--model", "gpt-4.1"], b"--model"),
    (["--model", "openai:"], b"--model"),
    (["--model", ":gpt"], b"--model"),
    (["--model", "openai:gpt 4"], b"--model"),
    (["--model", "mistral:large"], b"unknown provider \"mistral\" (known: openai, openai-responses, anthropic, demo)"),
    (["--tool", "rm_rf"], b"--tool"),
])
def test_agent_config_invalid(tmp_path, flags, needle):
    d = tmp_path / "bad"
    acct = run_cli(["account", "create", "Acme"], data_dir=d)["id"]
    cp = run_cli(["agent", "create", "--account", acct, "--name", "x"] + flags, data_dir=d, check=False)
    assert cp.returncode == 2, f"{flags}: exit {cp.returncode}, stderr {cp.stderr!r}"
    assert needle in cp.stderr, cp.stderr
    assert cp.stdout.strip() == b""
    with sqlite3.connect(d / "chatkitd.db") as db:
        assert db.execute("SELECT count(*) FROM agents").fetchone() == (0,)


# ---- usage ------------------------------------------------------------------------------------

def _insert_runs(db_path, rows):
    """Writes runs rows directly. The server writes them at the end of each turn; that path is
    covered by the run's own e2e tests. Here the table must already exist (migrated by the CLI)."""
    with sqlite3.connect(db_path) as db:
        db.executemany(
            "INSERT INTO runs(id, account_id, user_id, thread_id, agent_id, model, status, input_tokens,"
            " output_tokens, model_calls, tool_calls, started_us, ended_us)"
            " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _iso_us(s):
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return round(t.timestamp() * 1_000_000)


def test_usage_empty_account(tmp_path):
    d = tmp_path / "u0"
    acct = run_cli(["account", "create", "Acme"], data_dir=d)["id"]
    assert run_cli(["usage", "--account", acct], data_dir=d) == {
        "runs": [], "totals": {"runs": 0, "input_tokens": 0, "output_tokens": 0}}
    cp = run_cli(["usage", "--account", acct], data_dir=d, want_json=False)
    assert b"total: 0 runs, 0 input tokens, 0 output tokens" in cp.stdout


def test_usage_lists_runs(tmp_path):
    d = tmp_path / "u1"
    acct = run_cli(["account", "create", "Acme"], data_dir=d)["id"]  # migrates: the table exists
    other = run_cli(["account", "create", "Other"], data_dir=d)["id"]
    t0 = 1_780_000_000_000_000  # 2026-05-28
    rows = [(f"run_{i:035x}", acct, "usr_a", "thr_1" if i % 2 else "thr_2", "agt_1",
             "openai:gpt-4.1-mini", "completed" if i < 2 else "cancelled", 100 * (i + 1), 10 * (i + 1),
             i + 1, i, t0 + i * 1_000_000, t0 + i * 1_000_000 + 123_456) for i in range(3)]
    rows.append(("run_other", other, "usr_o", "thr_9", "agt_9", "demo", "completed", 5000, 500, 1, 0,
                 t0 + 10_000_000, t0 + 10_000_001))
    _insert_runs(d / "chatkitd.db", rows)

    out = run_cli(["usage", "--account", acct], data_dir=d)
    assert [r["id"] for r in out["runs"]] == [rows[2][0], rows[1][0], rows[0][0]]  # newest first
    assert out["totals"] == {"runs": 3, "input_tokens": 600, "output_tokens": 60}
    r = out["runs"][0]
    assert set(r) == {"id", "thread_id", "agent_id", "model", "status", "input_tokens", "output_tokens",
                      "model_calls", "tool_calls", "started_at", "ended_at"}
    assert (r["thread_id"], r["agent_id"], r["model"], r["status"]) == ("thr_2", "agt_1", "openai:gpt-4.1-mini",
                                                                        "cancelled")
    assert (r["input_tokens"], r["output_tokens"], r["model_calls"], r["tool_calls"]) == (300, 30, 3, 2)
    assert r["started_at"].endswith("Z") and _iso_us(r["started_at"]) == rows[2][11]
    assert _iso_us(r["ended_at"]) == rows[2][12]

    lim = run_cli(["usage", "--account", acct, "--limit", "2"], data_dir=d)
    assert [r["id"] for r in lim["runs"]] == [rows[2][0], rows[1][0]]
    assert lim["totals"] == {"runs": 2, "input_tokens": 500, "output_tokens": 50}  # of the runs listed
    thr = run_cli(["usage", "--account", acct, "--thread", "thr_2"], data_dir=d)
    assert [r["id"] for r in thr["runs"]] == [rows[2][0], rows[0][0]]
    # another account's runs and threads are invisible
    assert run_cli(["usage", "--account", acct, "--thread", "thr_9"], data_dir=d)["runs"] == []
    assert [r["id"] for r in run_cli(["usage", "--account", other], data_dir=d)["runs"]] == ["run_other"]

    text = run_cli(["usage", "--account", acct], data_dir=d, want_json=False).stdout.decode()
    lines = text.strip().splitlines()
    assert lines[0].split()[:3] == ["started_at", "ended_at", "id"] and len(lines) == 5
    assert rows[2][0] in lines[1] and "openai:gpt-4.1-mini" in lines[1]
    assert lines[-1] == "total: 3 runs, 600 input tokens, 60 output tokens"


@pytest.mark.parametrize("args,code", [
    (["usage"], 2),
    (["usage", "--account", "ACCT", "--limit", "0"], 2),
    (["usage", "--account", "ACCT", "--limit", "ten"], 2),
    (["usage", "--account", "ACCT", "--limit", "100001"], 2),
    (["usage", "--account", "acct_" + "0" * 35], 1),
])
def test_usage_failures(tmp_path, args, code):
    d = tmp_path / "uf"
    acct = run_cli(["account", "create", "Acme"], data_dir=d)["id"]
    cp = run_cli([acct if a == "ACCT" else a for a in args], data_dir=d, check=False)
    assert cp.returncode == code, f"{args}: exit {cp.returncode}, stderr {cp.stderr!r}"
    assert cp.stderr.strip() and cp.stdout.strip() == b""
