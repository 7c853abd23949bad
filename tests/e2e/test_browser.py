"""A real browser (Debian's headless Chromium) opens the demo login link and is signed in."""

import re
import shutil
import subprocess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def dom_after(url, profile):
    """The page's DOM once the browser has followed redirects and run its scripts."""
    cp = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120)
    assert cp.returncode == 0, cp.returncode
    return cp.stdout.decode()


def who(dom):
    """The page's status line (its script fills it in for a signed-in browser)."""
    m = re.search(r'<p id="who">(.*?)</p>', dom)
    assert m, dom
    return m.group(1)


def test_demo_login_link_signs_a_browser_in(server_factory, tmp_path):
    s = server_factory()
    demo = s.cli("demo")
    link = re.sub(r"^http://[^/]+", s.url, demo["login_url"])
    dom = dom_after(link, tmp_path / "profile")
    # redirected to / with the session cookie: the page's fetch of /chatkit/session succeeded
    assert who(dom) == f"Signed in as user {demo['user_id']} of account {demo['account_id']}.", dom
    # the link works once: another browser gets an error page and no session
    dom = dom_after(link, tmp_path / "profile2")
    assert "invalid_login_link" in dom and "Signed in" not in dom, dom
    # and a browser without a session is not signed in
    dom = dom_after(s.url + "/", tmp_path / "profile3")
    assert who(dom) == "chatkitd is running.", dom
