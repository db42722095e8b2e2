"""flows/runtime/api_watch.py against a real HTTP server on 127.0.0.1 that answers /health, then
goes away: the watch declares the API lost once nothing listens, and only then do the flows'
checks stop them and artifacts get skipped."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from flows.runtime import api_watch
from flows.runtime.api_watch import ApiLost, ApiWatch, artifact, stop_if_lost


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path.endswith("/health") else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.server_close()


def url_of(httpd: http.server.HTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/api"


def test_a_server_that_answers_is_not_lost(server: http.server.HTTPServer) -> None:
    made = []
    with ApiWatch.watching(url_of(server)) as watch:
        time.sleep(api_watch.REFUSED_SECONDS + 1.5)
        stop_if_lost("nothing")  # does not raise
        artifact(lambda **fields: made.append(fields), key="k")
        assert not watch.is_lost()
    assert made == [{"key": "k"}]


def test_a_server_that_goes_away_is_lost_after_the_refused_seconds(
    server: http.server.HTTPServer,
) -> None:
    calls = []
    with ApiWatch.watching(url_of(server), on_loss=lambda: calls.append("lost")) as watch:
        time.sleep(1.5)  # answered at least once
        server.shutdown()
        server.server_close()  # nothing listens on the port any more
        gone = time.monotonic()
        assert watch.lost.wait(api_watch.REFUSED_SECONDS + 3)
        assert time.monotonic() - gone >= api_watch.REFUSED_SECONDS - api_watch.PROBE_SECONDS
        assert calls == ["lost"]
        with pytest.raises(ApiLost, match=r"stopped answering at .*; stopped: the parts are kept"):
            stop_if_lost("the parts are kept")
        artifact(lambda **fields: pytest.fail("an artifact for a lost API"), key="k")

        def refused(**fields: object) -> None:
            raise ConnectionError("refused")

        artifact(refused)  # a failure because the API is gone is not the run's failure
    stop_if_lost("nothing")  # outside the watch: nothing to stop


def test_without_a_url_nothing_is_watched() -> None:
    def invalid(**fields: object) -> None:
        raise ValueError("a real failure")

    with ApiWatch.watching(None) as watch:
        stop_if_lost("nothing")
        with pytest.raises(ValueError, match="a real failure"):
            artifact(invalid)  # raised as it is, at once
    assert not watch.is_lost()
