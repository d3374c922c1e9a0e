"""pytest fixtures around harness.Server.

- ``make_server(name=..., **Server kwargs)``: start a fresh server (own port and data
  dir under the test's tmp_path); every server it made is stopped after the test.
  Use it for restarts, crashes, several instances, or a custom environment.
- ``server``: one fresh server for this test.
- ``shared_server`` / ``conn``: one server for the whole session and a connection
  to it as the application user, for tests that only add their own dialogs (every
  test uses fresh random user and dialog ids, so they do not see each other).

When a test fails, the tail of the log of every server alive during it is attached
to the report ("dialogs server log: ..." sections).
"""

from __future__ import annotations

import pytest

from harness import Server, server_description, servers_log_sections

# Servers started and not yet torn down, in start order: the ones whose logs a
# failing test's report shows.
_LIVE: list = []


def pytest_report_header(config):
    return f"tarantool under test: {server_description()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LIVE:
        for title, text in servers_log_sections(_LIVE):
            report.sections.append((title, text))


def report_logs_of(srv: Server) -> None:
    """Attach `srv`'s log to the report of a test that fails while it is registered
    (servers made outside make_server, e.g. config_harness's)."""
    _LIVE.append(srv)


def forget_logs_of(servers) -> None:
    for srv in servers:
        if srv in _LIVE:
            _LIVE.remove(srv)


@pytest.fixture
def make_server(tmp_path):
    made = []

    def make(name: str = "dialogs", *, start: bool = True, **kwargs) -> Server:
        srv = Server(tmp_path / name, name=name, **kwargs)
        made.append(srv)
        _LIVE.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in made:
        srv.stop()
        _LIVE.remove(srv)


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory) -> Server:
    srv = Server(tmp_path_factory.mktemp("shared"), name="shared")
    _LIVE.append(srv)
    srv.start()
    yield srv
    srv.stop()
    _LIVE.remove(srv)


@pytest.fixture
def conn(shared_server):
    c = shared_server.connect()
    yield c
    c.close()
