"""A server that never answers 500: malformed bodies, unbounded numbers, bodies over the limit
(declared or chunked), foreign Host / Origin headers, half-open sockets, and slow work beside
fast requests. The probes reproduce requests measured to give a 500 (or worse) before."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from contextlib import closing

import pytest
from fastapi.testclient import TestClient

from convlens.server import create_app
from convlens.server.app import MAX_BODY_BYTES, MAX_JSON_BYTES
from convlens.server.background import BackgroundServer


@pytest.fixture(scope="module")
def app(digits_run):
    return create_app([digits_run], allowed_hosts=["testserver"])


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def base(digits_run) -> str:
    return f"/api/runs/{digits_run.name}"


def check_4xx(response, status: int, words: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str) and words.lower() in body["detail"].lower(), body
    json.dumps(body)  # plain JSON all through
    return body


# --- 422s that used to be 500s ------------------------------------------------------------------


def test_image_sent_as_a_text_field_is_a_422(client, base):
    # curl -F image=abc: a form field, not a file
    body = check_4xx(client.post(f"{base}/predict", data={"image": "abc"}), 422, "image")
    assert all(set(error) == {"loc", "msg", "type"} for error in body["errors"])
    assert "abc" not in json.dumps(body["errors"])  # the input itself is never echoed


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"hello", "text/plain"),
        (b"\xff\xfe\x00binary", "application/octet-stream"),
        (b'{"image": [[1]], "stride": 1', "application/json"),  # cut short
        (b"[]", "application/json"),
        (b"", "application/json"),
    ],
)
def test_playground_body_that_is_not_a_request_is_a_422(client, content, kind):
    response = client.post("/api/playground/convolve", content=content, headers={"content-type": kind})
    check_4xx(response, 422)


@pytest.mark.parametrize(
    ("path", "data", "words"),
    [
        ("/api/playground/convolve", {"image": [[0] * 4] * 4, "stride": 10**30}, "stride"),
        ("/api/playground/convolve", {"image": [[0] * 4] * 4, "padding": 10**30}, "padding"),
        ("/api/playground/convolve", {"image": [[0] * 4] * 4, "stride": 1e308}, "stride"),
    ],
)
def test_huge_numbers_in_json_are_a_422(client, path, data, words):
    check_4xx(client.post(path, json=data), 422, words)


@pytest.mark.parametrize(
    ("path", "data", "words"),
    [
        ("predict", {"test_index": 10**30}, "test_index"),
        ("arithmetic", {"test_index": 0, "stage": "conv1", "channel": 10**30}, "channel"),
        ("arithmetic", {"test_index": 0, "stage": "conv1", "row": 10**30}, "row"),
        ("attribution", {"test_index": 0, "target": 10**30}, "target"),
        ("attack", {"test_index": 0, "steps": 10**30}, "steps"),
        ("attack", {"test_index": 0, "eps": "inf"}, "eps"),
        ("attack", {"test_index": 0, "target": -(10**30)}, "target"),
    ],
)
def test_huge_numbers_in_forms_are_a_422(client, base, path, data, words):
    check_4xx(client.post(f"{base}/{path}", data=data), 422, words)


@pytest.mark.parametrize(
    "url",
    [
        "{base}/test-images?start=100000000000000000000",
        "{base}/test-images?count=-5",
        "{base}/top-images?stage=conv1&channel=99999999999999999999",
        "/api/playground/picture?size=99999999999999999999",
    ],
)
def test_huge_numbers_in_queries_are_a_422(client, base, url):
    check_4xx(client.get(url.format(base=base)), 422)


def test_bounds_are_in_the_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    convolve = schema["components"]["schemas"]["ConvolveRequest"]["properties"]
    assert convolve["stride"]["minimum"] == 1 and convolve["stride"]["maximum"] == 64
    assert convolve["padding"]["maximum"] == 7
    attack = schema["paths"]["/api/runs/{run_id}/attack"]["post"]
    form_ref = attack["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    form = schema["components"]["schemas"][form_ref]["properties"]
    assert form["eps"]["maximum"] == 1 and form["steps"]["maximum"] == 100
    assert set(attack["responses"]) >= {"200", "400", "403", "404", "413", "415", "421", "422"}
    convolve_op = schema["paths"]["/api/playground/convolve"]["post"]
    assert set(convolve_op["responses"]) >= {"200", "400", "413", "422"}


# --- body limits -----------------------------------------------------------------------------------


def test_declared_json_body_over_the_limit_is_refused_unread(client):
    response = client.post(
        "/api/playground/convolve",
        content=b"{}",
        headers={"content-length": str(MAX_JSON_BYTES + 1), "content-type": "application/json"},
    )
    check_4xx(response, 413, "limited to 1 MB")


def _chunks(total: int, size: int = 256 * 1024):
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield b"[" * n if sent == 0 else b"0," * (n // 2)
        sent += n


def test_chunked_json_over_the_limit_is_a_413(client):
    # TestClient sends a generator body chunked (no Content-Length)
    response = client.post(
        "/api/playground/convolve",
        content=_chunks(3 * MAX_JSON_BYTES),
        headers={"content-type": "application/json"},
    )
    check_4xx(response, 413, "limited to 1 MB")


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _chunked_post(
    url: str, path: str, kind: str, total: int, boundary_head: bytes = b""
) -> tuple[int, dict, int]:
    """POST ``total`` bytes with Transfer-Encoding: chunked over http.client; stops sending as soon
    as the server answers. Returns (status, body, bytes sent)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", path)
    connection.putheader("Content-Type", kind)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    sock, sent = connection.sock, 0
    chunk = b"\0" * (256 * 1024)
    try:
        if boundary_head:
            sock.sendall(f"{len(boundary_head):x}\r\n".encode() + boundary_head + b"\r\n")
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there: stop sending
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, body, sent


def test_chunked_uploads_over_the_limit_are_a_413_without_growing_the_server(digits_run):
    total = 300 * 2**20
    boundary = "convlensboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    with BackgroundServer([digits_run]) as url:
        path = f"/api/runs/{digits_run.name}/predict"
        peak, stop = [_rss_bytes()], threading.Event()
        before = peak[0]

        def sample() -> None:
            while not stop.is_set():
                peak.append(_rss_bytes())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            status, body, sent = _chunked_post(
                url, path, f"multipart/form-data; boundary={boundary}", total, head
            )
            assert status == 413, body
            assert "limited to 5 MB" in body["detail"]
            assert sent < 64 * 2**20  # refused early, not after the whole 300 MB
            status, body, _ = _chunked_post(url, "/api/playground/convolve", "application/json", 50 * 2**20)
            assert status == 413, body
            assert "limited to 1 MB" in body["detail"]
        finally:
            stop.set()
            sampler.join()
        # the server runs in this process: its memory may grow by one body at most, not by 300 MB
        assert max(peak) - before < MAX_BODY_BYTES + 16 * 2**20, (before, max(peak))
        # and it keeps serving
        with closing(http.client.HTTPConnection(url.split("//")[1].rstrip("/"), timeout=30)) as connection:
            connection.request("GET", "/api/runs")
            assert connection.getresponse().status == 200


# --- the connection survives a 500 ------------------------------------------------------------------


def test_keep_alive_connection_survives_an_internal_error(digits_run):
    server = BackgroundServer([digits_run])

    @server.app.get("/api/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("a bug")

    with (
        server as url,
        closing(http.client.HTTPConnection(url.split("//")[1].rstrip("/"), timeout=30)) as connection,
    ):
        connection.request("GET", "/api/boom")
        response = connection.getresponse()
        assert response.status == 500
        assert json.loads(response.read()) == {"detail": "internal error: RuntimeError"}
        connection.request("GET", "/api/runs")  # the same socket
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())


# --- Host and Origin ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(digits_run) -> TestClient:
    """The app as `convlens serve` builds it by default: loopback names only."""
    return TestClient(create_app([digits_run]), raise_server_exceptions=False)


@pytest.mark.parametrize(
    "host", ["testserver", "evil.example", "evil.example:8000", "127.0.0.1.evil.example"]
)
def test_foreign_host_is_refused_by_default(strict, host):
    check_4xx(strict.get("/api/runs", headers={"host": host}), 421, "not this server")
    check_4xx(strict.get("/", headers={"host": host}), 421)


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1"])
def test_loopback_hosts_are_served(strict, host):
    assert strict.get("/api/runs", headers={"host": host}).status_code == 200


def test_host_given_to_serve_is_served(digits_run):
    client = TestClient(create_app([digits_run], allowed_hosts=["explorer.lan:8000"]))
    assert client.get("/api/runs", headers={"host": "explorer.lan:9000"}).status_code == 200
    assert client.get("/api/runs", headers={"host": "other.lan"}).status_code == 421


def test_wildcard_bind_accepts_ip_hosts_only(digits_run):
    client = TestClient(create_app([digits_run], any_ip_host=True), raise_server_exceptions=False)
    assert client.get("/api/runs", headers={"host": "192.168.1.20:8000"}).status_code == 200
    assert client.get("/api/runs", headers={"host": "[fe80::1]:8000"}).status_code == 200
    assert client.get("/api/runs", headers={"host": "rebind.example:8000"}).status_code == 421


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://127.0.0.1:8000", 200),  # the page itself
        ("http://evil.example", 403),
        ("http://127.0.0.1:9999", 403),  # another local server's page
        ("null", 403),  # a sandboxed frame or a file:// page
        ("http://tool.example:3000", 200),  # --allow-origin
    ],
)
def test_origin_of_a_post_must_be_the_page_or_allowed(digits_run, origin, status):
    client = TestClient(
        create_app([digits_run], allowed_origins=["http://tool.example:3000/"]), raise_server_exceptions=False
    )
    headers = {"host": "127.0.0.1:8000", "origin": origin}
    response = client.post(f"/api/runs/{digits_run.name}/predict", data={"test_index": 0}, headers=headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert "may not send requests" in response.json()["detail"]
    # reading is not refused (a browser keeps another origin from seeing the answer anyway)
    assert client.get("/api/runs", headers=headers).status_code == 200


def test_post_without_origin_is_served(strict, base):
    # curl and scripts send no Origin; a browser always does on a POST
    response = strict.post(f"{base}/predict", data={"test_index": 0}, headers={"host": "127.0.0.1:8000"})
    assert response.status_code == 200


def test_serve_command_passes_allowed_origins(monkeypatch, digits_run):
    from convlens.cli import serve_cmd

    seen = {}

    def fake_create_app(run_dirs, **options):
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr("convlens.server.create_app", fake_create_app)
    with pytest.raises(SystemExit):
        serve_cmd.serve_runs([digits_run], allow_origins=["http://Tool.example:3000/"])
    assert seen["allowed_origins"] == ["http://tool.example:3000"]
    assert seen["allowed_hosts"] == ["127.0.0.1"] and not seen["any_ip_host"]

    from convlens.errors import ConvlensError

    with pytest.raises(ConvlensError, match="--allow-origin must look like"):
        serve_cmd.serve_runs([digits_run], allow_origins=["tool.example"])


# --- half-open sockets ---------------------------------------------------------------------------------


def test_half_open_request_head_is_cut_off(digits_run, monkeypatch):
    monkeypatch.setattr("convlens.server.background.HEADER_TIMEOUT_S", 0.5)
    with BackgroundServer([digits_run]) as url:
        host, port = url.split("//")[1].rstrip("/").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: never ends
            start = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server
            assert time.monotonic() - start < 5
        # a whole request is still answered, and a kept-alive socket too
        with closing(http.client.HTTPConnection(f"{host}:{port}", timeout=10)) as connection:
            for _ in range(2):
                connection.request("GET", "/api/runs")
                assert connection.getresponse().read()


# --- slow work does not hold up fast requests ----------------------------------------------------------


def test_predict_and_activations_do_not_wait_for_slow_work(app, client, base):
    """Feature visualization, attacks and attributions hold the run's slow lock (on a copy of the
    model); predict and activations must answer while it is held."""
    run = next(iter(app.state.runs.runs.values()))
    run.slow_model()  # the copy exists
    answers = {}

    def fast() -> None:
        for kind in ("predict", "activations"):
            answers[kind] = client.post(f"{base}/{kind}", data={"test_index": 3}).status_code

    with run.slow_lock:  # as if a feature visualization were running
        worker = threading.Thread(target=fast, daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "a fast request waited for the slow lock"
    assert answers == {"predict": 200, "activations": 200}
    features = client.get(f"{base}/features", params={"stage": "conv1"})
    assert features.status_code == 200
    attack = client.post(f"{base}/attack", data={"test_index": 3, "method": "pgd", "steps": 2})
    assert attack.status_code == 200
    attribution = client.post(f"{base}/attribution", data={"test_index": 3, "method": "occlusion"})
    assert attribution.status_code == 200 and attribution.json()["method"] == "occlusion"
