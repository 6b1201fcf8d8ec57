"""The explorer's API against its own OpenAPI schema, with every schemathesis check (issue 25,
item 16): a real ``convlens serve`` on 127.0.0.1 and the ``schemathesis`` command line, so the
coverage phase runs too (undocumented methods, ``OPTIONS`` and its ``Allow``, missing and
out-of-bounds values), not only generated cases. Zero failures, except the few documented in
``NOT_SCHEMA_RULES``: rules that depend on the served run or on the bytes of an upload, which
no OpenAPI schema can state, answered 400 (or 415) with a one-line detail that names them."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

RUN = "digits"  # the served run's id: its folder's name in the runs dir
SEGMENTATION_RUN = "squares"  # served beside it for the endpoints only a segmentation run answers
SEGMENTATION_PATHS = ("/segment", "/pixel", "/portrait")

# Schema-valid requests the server refuses, each for a reason no schema can carry. Only these
# may fail only the ``positive_data_acceptance`` check, and only with these statuses and details.
NOT_SCHEMA_RULES = {
    # the run's own stage names, its layer kinds, channel counts, map sizes and classes:
    # GET /api/runs/{run_id} lists them; the schema is one for every run the explorer serves
    "unknown stage": r"^unknown stage ['\"].*; this model's stages are",
    "stage kind": r"has no convolution|has no channels to visualize|no spatial feature map|is flat",
    "channel count": r"^channel must be 0\.\.\d+ for stage|outside stage '",
    "class count": r"^target must be a class index 0\.\.\d+",
    "image size": r"^(row|col) must be a whole number 0\.\.\d+, got",
    "test split size": r"^test_index must be 0\.\.\d+, got",
    "saved epochs": r"^epoch must be one of the saved epochs",
    # a built-in's task (labels or masks) decides which families fit it; /api/registry lists both
    "task of the data": r"^model: \w+ does (classification|segmentation), but \S+ is \w+ data",
    # an upload's bytes must be an image (the schema says "binary"); and an empty one is no image
    "upload bytes": r"^upload '.*' is empty|^upload '.*'.*(not|cannot|unsupported|decod|read)",
    # the convolution playground: rows of one length, a kernel no larger than the padded image,
    # products within float64 (a cross-field rule each)
    "grid shape": r"rectangular grid|rows of equal length$|rows must have the same number|^kernel \d+x\d+ is larger than",
    "overflow": r"too large: their products overflow",
    # the learning playground's weight and bias edits: indices within the page's own network
    # (its layers and neurons, chosen when it started)
    "playground network shape": r"^(layer|neuron|source) must be a whole number from 0 to \d+, got",
}
ALLOWED_STATUSES = {400, 415}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def explorer(digits_run, tmp_path_factory):
    """``convlens serve --runs-dir`` on a free loopback port, serving a copy of the digits run
    (its snapshots too) and of a segmentation run; a training the fuzzer starts is written next
    to them, one at a time."""
    from segmentation_fixtures import squares_run_once

    runs = tmp_path_factory.mktemp("conformance-runs")
    shutil.copytree(digits_run, runs / RUN)
    shutil.copytree(squares_run_once(tmp_path_factory), runs / SEGMENTATION_RUN)
    port = _free_port()
    command = [sys.executable, "-m", "convlens", "--threads", "1", "serve", "--runs-dir", str(runs)]
    server = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/runs", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"convlens serve exited: {server.stderr.read()[-2000:]}")
                time.sleep(0.25)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _schema(url: str, folder: Path) -> Path:
    """The server's own schema, with ``{run_id}`` fixed to the served run (as in test_server_fuzz:
    a generated id only ever reaches the 404)."""
    raw = json.load(urllib.request.urlopen(f"{url}/openapi.json", timeout=10))
    paths = {}
    for path, methods in raw["paths"].items():
        for operation in methods.values():
            operation["parameters"] = [p for p in operation.get("parameters", []) if p["name"] != "run_id"]
        run = SEGMENTATION_RUN if path.endswith(SEGMENTATION_PATHS) else RUN
        paths[path.replace("{run_id}", run)] = methods
    raw["paths"] = paths
    spec = folder / "openapi.json"
    spec.write_text(json.dumps(raw))
    return spec


def run_schemathesis(url: str, folder: Path, examples: int, seed: int | None, timeout: int) -> dict:
    """``st run`` with every check; returns its numbers and each failure not in NOT_SCHEMA_RULES."""
    report = folder / "events.ndjson"
    command = [
        str(Path(sys.executable).parent / "st"), "run", str(_schema(url, folder)), "--url", url,
        "--checks", "all", "--max-examples", str(examples), "--workers", "2",
        "--continue-on-failure",  # a documented refusal must not hide a later failure
        "--request-timeout", "20", "--generation-database", "none", "--no-color",
        "--report", "ndjson", "--report-ndjson-path", str(report),
        *(["--seed", str(seed)] if seed is not None else []),
    ]  # fmt: skip
    # in the test's folder: st keeps a cache of failing cases (.schemathesis/) where it runs
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd=folder
    )
    return _read_events(report, finished.stdout)


def _detail(interaction: dict | None) -> tuple[int | None, str]:
    response = (interaction or {}).get("response") or {}
    content = response.get("content") or {}
    body = base64.b64decode(content["$base64"]) if "$base64" in content else b""
    try:
        detail = json.loads(body).get("detail", "")
    except (ValueError, AttributeError):
        detail = body.decode("utf-8", "replace")
    return response.get("status_code"), str(detail)


def _documented(check: str, status: int | None, detail: str) -> bool:
    return (
        check == "positive_data_acceptance"
        and status in ALLOWED_STATUSES
        and any(re.search(rule, detail) for rule in NOT_SCHEMA_RULES.values())
    )


def _read_events(report: Path, output: str) -> dict:
    cases, operations, failures, documented, errors, finished = 0, set(), [], 0, [], False
    for line in report.read_text().splitlines():
        event = json.loads(line)
        kind, body = next(iter(event.items()))
        if kind == "EngineFinished":
            finished = True
        if kind == "NonFatalError":
            errors.append(str(body)[:500])
        if kind != "ScenarioFinished":
            continue
        recorder = body.get("recorder") or {}
        operations.add(recorder.get("label"))
        cases += len(recorder.get("cases") or {})
        for case_id, checks in (recorder.get("checks") or {}).items():
            for check in checks:
                if check["status"] != "failure":
                    continue
                status, detail = _detail((recorder.get("interactions") or {}).get(case_id))
                if _documented(check["name"], status, detail):
                    documented += 1
                    continue
                case = (recorder.get("cases") or {}).get(case_id, {}).get("value", {})
                failures.append(
                    f"{recorder.get('label')}: {check['name']} -> {status} {detail[:200]!r}; "
                    f"request {json.dumps({k: case.get(k) for k in ('method', 'path', 'query', 'body')})[:400]}"
                )
    return {
        "finished": finished,
        "operations": operations,
        "cases": cases,
        "failures": failures,
        "documented": documented,
        "errors": errors,
        "output": output[-3000:],
    }


def check_conformance(explorer: str, folder: Path, examples: int, seed: int | None, timeout: int) -> dict:
    result = run_schemathesis(explorer, folder, examples, seed, timeout)
    assert result["finished"], result["output"]
    assert len(result["operations"]) >= 29, sorted(result["operations"])  # every operation, tested
    assert not result["errors"], result["errors"]
    assert not result["failures"], "\n".join(sorted(set(result["failures"]))[:30])
    return result


def test_every_operation_conforms_with_every_check(explorer, tmp_path):
    """A fixed seed and 8 examples an operation: the same ~1,000 requests each time, in well under
    a minute on two cores."""
    result = check_conformance(explorer, tmp_path, examples=8, seed=25, timeout=120)
    assert result["cases"] > 500
    assert f"POST /api/train/{RUN}/resume" in result["operations"]  # a finished run: 409, naming why


def test_a_schema_valid_request_is_refused_only_for_a_documented_reason(explorer):
    """The exceptions stay narrow: a run-dependent refusal matches, a refusal the schema should
    have stated does not."""
    assert _documented("positive_data_acceptance", 400, "unknown stage 'x'; this model's stages are: conv1")
    assert _documented("positive_data_acceptance", 400, "epoch must be one of the saved epochs (0..3), got 9")
    assert not _documented("positive_data_acceptance", 400, "page: expected the page's id, 8 to 64 letters")
    assert not _documented("positive_data_acceptance", 422, "unknown stage 'x'; this model's stages are")
    assert not _documented("negative_data_rejection", 400, "unknown stage 'x'; this model's stages are")


def test_options_and_unknown_methods_name_every_method_of_the_path(explorer):
    """Starlette's 405 named the first route's methods only: ``OPTIONS /api/train`` said
    ``Allow: GET`` though POST starts a training there."""
    for path, allowed in [
        ("/api/train", "GET, POST"),
        (f"/api/train/{RUN}", "DELETE"),
        (f"/api/train/{RUN}/resume", "POST"),
        ("/api/playground2d/start", "POST"),  # not a page id: DELETE /api/playground2d/{page} is elsewhere
        ("/api/playground2d/page-0001", "DELETE"),
    ]:
        for method in ("OPTIONS", "PUT"):
            request = urllib.request.Request(f"{explorer}{path}", method=method)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 405 and refused.value.headers["Allow"] == allowed, (method, path)


@pytest.mark.slow
def test_every_operation_conforms_with_every_check_long(explorer, tmp_path):
    """100 examples an operation and a new seed each run (printed by schemathesis on failure)."""
    check_conformance(explorer, tmp_path, examples=100, seed=None, timeout=1500)
