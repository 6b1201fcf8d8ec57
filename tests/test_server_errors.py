"""Bad uploads and bad parameters get a 4xx with a one-line message, never a 500; the server keeps
serving afterwards; nothing outside the static folder is ever served."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convlens.server import create_app
from convlens.server.uploads import MAX_UPLOAD_BYTES


@pytest.fixture(scope="module")
def client(digits_run) -> TestClient:
    # raise_server_exceptions=False: a bug would show up as a 500 answer, which the tests reject
    return TestClient(create_app([digits_run], allowed_hosts=["testserver"]), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def base(digits_run) -> str:
    return f"/api/runs/{digits_run.name}"


def image_bytes(size=(20, 20), mode="L", fmt="PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, 0).save(buffer, fmt)
    return buffer.getvalue()


def upload(name: str, data: bytes, kind: str = "image/png") -> dict:
    return {"image": (name, data, kind)}


def check_refused(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words.lower() in detail.lower(), detail
    assert "\n" not in detail and "Traceback" not in detail


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("notes.txt", b"just some text", 415, "not an image"),
        ("empty.png", b"", 400, "empty"),
        ("cut.png", image_bytes()[:40], 415, "upload 'cut.png'"),
        ("vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>', 415, "not an image"),
        ("script.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 415, "not an image"),
        ("bomb.png", image_bytes((20000, 20000), mode="1"), 413, "too large"),
        ("big.png", image_bytes((5000, 4000), mode="1"), 413, "pixels"),
    ],
)
def test_bad_uploads_are_refused(client, base, name, data, status, words):
    check_refused(client.post(f"{base}/predict", files=upload(name, data)), status, words)


def test_upload_over_5_mb_is_refused_before_decoding(client, base):
    too_big = image_bytes() + b"\0" * (MAX_UPLOAD_BYTES + 1)
    check_refused(client.post(f"{base}/predict", files=upload("huge.png", too_big)), 413, "5 MB")


def test_upload_of_exactly_5_mb_is_accepted(client, base):
    from convlens.server.uploads import check_upload

    # a PNG padded with trailing bytes to exactly the limit: Pillow ignores what follows IEND
    exactly = image_bytes() + b"\0" * (MAX_UPLOAD_BYTES - len(image_bytes()))
    check_upload(exactly, "edge.png")
    response = client.post(f"{base}/predict", files=upload("edge.png", exactly))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "data", "status", "words"),
    [
        ("predict", {}, 400, "exactly one of"),
        ("predict", {"test_index": 10_000}, 400, "test_index must be 0.."),
        ("predict", {"test_index": -1}, 422, "test_index: input should be greater than or equal to 0"),
        ("predict", {"test_index": "seven"}, 422, "test_index"),
        ("activations", {}, 400, "exactly one of"),
        ("arithmetic", {"test_index": 0, "stage": "conv9"}, 400, "unknown stage 'conv9'"),
        ("arithmetic", {"test_index": 0, "stage": "conv1", "channel": 99}, 400, "outside stage 'conv1'"),
        ("arithmetic", {"test_index": 0, "stage": "conv1", "row": -1}, 422, "row"),
        ("arithmetic", {"test_index": 0, "stage": "conv1", "col": 10**30}, 422, "col"),
        ("arithmetic", {"test_index": 0, "stage": "fc", "row": 2}, 400, "flat"),
        ("arithmetic", {"test_index": 0}, 422, "stage"),
        ("attribution", {"test_index": 0, "method": "magic"}, 400, "method must be one of grad-cam"),
        ("attribution", {"test_index": 0, "target": 10}, 400, "target must be a class index 0..9"),
        ("attribution", {"test_index": 0, "stage": "nowhere"}, 400, "unknown stage"),
        ("attribution", {"test_index": 0, "stage": "fc"}, 400, "no spatial feature map"),
        ("attack", {"test_index": 0, "eps": 2}, 422, "eps: input should be less than or equal to 1"),
        ("attack", {"test_index": 0, "eps": "nan"}, 422, "eps"),
        ("attack", {"test_index": 0, "eps": -0.1}, 422, "eps"),
        ("attack", {"test_index": 0, "method": "pgd", "steps": 0}, 422, "steps"),
        ("attack", {"test_index": 0, "method": "pgd", "steps": 10_000}, 422, "steps"),
        ("attack", {"test_index": 0, "method": "cw"}, 400, "method must be one of fgsm, pgd"),
        ("attack", {"test_index": 0, "target": 12}, 400, "target must be a class index"),
    ],
)
def test_bad_parameters_are_4xx_with_a_message(client, base, path, data, status, words):
    check_refused(client.post(f"{base}/{path}", data=data), status, words)


def test_image_and_test_index_together_are_refused(client, base):
    response = client.post(f"{base}/predict", data={"test_index": 0}, files=upload("a.png", image_bytes()))
    check_refused(response, 400, "exactly one of")


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/api/runs/nope", 404, "no run 'nope'"),
        ("/api/runs/nope/test-images", 404, "loaded runs"),
        ("{base}/test-images?count=100000", 422, "count"),
        ("{base}/filters?stage=relu1", 400, "has no convolution"),
        ("{base}/filters?stage=xyz", 400, "unknown stage"),
        ("{base}/features?stage=normalize", 400, "no channels"),
        ("{base}/features?stage=fc", 400, "no channels"),
        ("{base}/top-images?stage=conv1&channel=16", 400, "channel must be 0..15"),
        ("/api/playground/picture?name=/etc/passwd", 400, "expected smiley"),
        ("/api/playground/picture?name=digits:99999", 400, "digits:N"),
        ("/api/playground/picture?name=smiley&size=1000", 422, "size"),
    ],
)
def test_bad_queries(client, base, url, status, words):
    check_refused(client.get(url.format(base=base)), status, words)


def test_predict_on_unknown_run_is_404(client):
    check_refused(client.post("/api/runs/nope/predict", data={"test_index": 0}), 404, "no run")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"image": [[0, 1], [1]], "kernel": "edge"}, 400, "rectangular"),
        ({"image": [], "kernel": "edge"}, 400, "rectangular"),
        ({"image": np.zeros((65, 65)).tolist()}, 400, "64x64"),
        ({"image": np.zeros((4, 4)).tolist(), "kernel": "fancy"}, 400, "kernel 'fancy'"),
        ({"image": np.zeros((4, 4)).tolist(), "kernel": [[1, 2], [3]]}, 400, "kernel"),
        ({"image": np.zeros((4, 4)).tolist(), "kernel": np.ones((9, 9)).tolist()}, 400, "at most 7x7"),
        ({"image": np.zeros((2, 2)).tolist(), "kernel": "edge"}, 400, "larger than"),
        ({"image": np.zeros((4, 4)).tolist(), "stride": 0}, 422, "stride"),
        ({"image": np.zeros((4, 4)).tolist(), "stride": 10**30}, 422, "stride"),
        ({"image": np.zeros((4, 4)).tolist(), "padding": -1}, 422, "padding"),
        ({"image": "smiley"}, 422, "image"),
    ],
)
def test_bad_convolutions(client, body, status, words):
    check_refused(client.post("/api/playground/convolve", json=body), status, words)


def test_non_finite_grid_is_refused(client):
    response = client.post(
        "/api/playground/convolve",
        content=b'{"image": [[NaN, 0, 0], [0, 0, 0], [0, 0, 0]], "kernel": "edge"}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500


def test_declared_body_over_the_limit_is_refused_unread(client, base):
    response = client.post(
        f"{base}/predict",
        content=b"x",
        headers={"content-length": str(50 * 2**20), "content-type": "text/plain"},
    )
    check_refused(response, 413, "limited to 5 MB")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fcheckpoint.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/....//app.py",
        "/../../etc/passwd",
        "/app.py",
        "/static/",
    ],
)
def test_nothing_outside_static_is_served(client, path):
    response = client.get(path)
    assert response.status_code in (404, 400, 405), (path, response.status_code)
    assert "create_app" not in response.text and "root:" not in response.text


def test_server_keeps_serving_after_bad_requests(client, base):
    for _ in range(3):
        client.post(f"{base}/predict", files=upload("x.txt", b"nonsense"))
        client.post(f"{base}/arithmetic", data={"test_index": 0, "stage": "bad"})
    assert client.post(f"{base}/predict", data={"test_index": 0}).status_code == 200


def test_loading_a_bad_run_fails_with_a_clear_error(tmp_path):
    from convlens.errors import ConvlensError

    with pytest.raises(ConvlensError, match="no checkpoint here"):
        create_app([tmp_path])
    with pytest.raises(ConvlensError, match="at least one run"):
        create_app([])


def test_unavailable_test_images_are_a_4xx(digits_run, tmp_path):
    import json
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(digits_run, moved)
    meta = json.loads((moved / "model.json").read_text())
    meta["dataset"]["spec"] = str(tmp_path / "gone")
    (moved / "model.json").write_text(json.dumps(meta))
    client = TestClient(create_app([moved], allowed_hosts=["testserver"]), raise_server_exceptions=False)
    check_refused(client.post("/api/runs/moved/predict", data={"test_index": 0}), 400, "not available")
    check_refused(client.get("/api/runs/moved/test-images"), 400, "not available")
    assert client.post("/api/runs/moved/predict", files=upload("a.png", image_bytes())).status_code == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mangled_images_never_cause_a_500(client, base, data):
    """Random bytes, and real PNG/JPEG/GIF/BMP/TIFF files with bytes flipped or cut short."""
    kind = data.draw(st.sampled_from(["random", "PNG", "JPEG", "GIF", "BMP", "TIFF"]))
    if kind == "random":
        body = data.draw(st.binary(min_size=1, max_size=300))
    else:
        body = bytearray(image_bytes((16, 12), mode="RGB", fmt=kind))
        for _ in range(data.draw(st.integers(1, 8))):
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
        body = bytes(body[: data.draw(st.integers(1, len(body)))])
    response = client.post(f"{base}/predict", files=upload("fuzz.bin", body))
    assert response.status_code in (200, 400, 413, 415), response.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stage=st.sampled_from(["normalize", "conv1", "relu1", "pool1", "conv2", "flatten", "fc", "softmax", "x"]),
    cell=st.tuples(*[st.integers(-3, 40)] * 3),
    eps=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4)),
)
def test_random_parameters_never_cause_a_500(client, base, stage, cell, eps):
    channel, row, col = cell
    arithmetic = client.post(
        f"{base}/arithmetic",
        data={"test_index": 1, "stage": stage, "channel": channel, "row": row, "col": col},
    )
    assert arithmetic.status_code in (200, 400, 422), arithmetic.text
    attack = client.post(f"{base}/attack", data={"test_index": 1, "eps": str(eps)})
    assert attack.status_code in (200, 400, 422), attack.text
