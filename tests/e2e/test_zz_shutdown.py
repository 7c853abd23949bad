"""Runs last (file order): the shared server, after serving the whole suite, stops cleanly
(exit 0, no sanitizer report — under ASan this is where leaks show up)."""

from conftest import sanitizer_report


def test_shared_server_stops_cleanly(_shared):
    s = _shared.get()
    code = s.stop()
    log = s.log_tail(max_bytes=10 ** 7)
    _shared.server = None  # a later test (other orderings) gets a fresh one
    assert code == 0, f"exit code {code}\n{log[-3000:]}"
    rep = sanitizer_report(log)
    assert rep is None, rep
