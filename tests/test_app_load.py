"""The web app under concurrent users: a server process, 8 clients uploading photos at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

CLIENTS, ROUNDS = 8, 5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(model_dir, tmp_path):
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "emodiff.cli", "serve", "--model", str(model_dir), "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(1)
    yield process, url, tmp_path / "server.log"
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.mark.slow
def test_eight_clients_uploading_photos_at_once_are_all_answered_and_the_server_lives(server, photo_path):
    from gradio_client import Client, handle_file

    process, url, log = server

    def client_session(index: int) -> list[int]:
        client = Client(url, verbose=False)
        answered = []
        for _ in range(ROUNDS):
            edited, before_after, strip, files = client.predict(handle_file(str(photo_path)), ["happy"], 0.5, api_name="/run")
            assert edited and len(strip) == 7 and len(files) == 1
            answered.append(1)
        return answered

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client_session, range(CLIENTS)))
    assert sum(map(sum, results)) == CLIENTS * ROUNDS
    assert process.poll() is None, log.read_text()  # the server is still alive
