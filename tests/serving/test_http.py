"""`fastslow serve`: a real uvicorn on 127.0.0.1 (an ephemeral port) answers as System 2 and the
deployment do locally, batches concurrent requests, refuses bad requests with a 4xx and one line,
and finishes the requests in flight on SIGTERM."""

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
prometheus_parser = pytest.importorskip("prometheus_client.parser")

import fastslow  # noqa: E402
from fastslow.cli import main  # noqa: E402
from fastslow.serving import prediction_rows  # noqa: E402
from fastslow.serving.http import create_app, listen  # noqa: E402

TIMEOUT = 20.0  # seconds, for any one request
NPY = "application/x-npy"


@pytest.fixture(scope="module")
def deployment(fitted_folder):
    return fastslow.load(fitted_folder)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return (load_digits().images[:40] / 16.0).astype(np.float32)[:, None]  # [40, 1, 8, 8] in [0, 1]


@contextmanager
def serving(app):
    """``app`` on a real uvicorn in a thread, on 127.0.0.1 and an ephemeral port: its base URL."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        sock.close()


@pytest.fixture(scope="module")
def url(deployment):
    with serving(create_app(deployment)) as base:
        yield base


def _npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def _metric(base: str, name: str, labels: dict | None = None, headers: dict | None = None) -> float:
    """A sample's value from /metrics (0 if absent)."""
    text = httpx.get(f"{base}/metrics", headers=headers, timeout=TIMEOUT).text
    for family in prometheus_parser.text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
    return 0.0


@torch.no_grad()
def test_system2_answers_equal_local_logits_for_json_and_npy(url, deployment, digits):
    local = deployment.system2(torch.from_numpy(digits)).numpy()
    as_json = httpx.post(f"{url}/v1/system2", json={"inputs": digits.tolist()}, timeout=TIMEOUT)
    as_npy = httpx.post(f"{url}/v1/system2", content=_npy(digits), headers={"content-type": NPY}, timeout=TIMEOUT)
    for response in (as_json, as_npy):
        assert response.status_code == 200, response.text
        body = response.json()
        np.testing.assert_allclose(np.array(body["logits"]), local, atol=1e-5, rtol=0)
        assert body["answers"] == local.argmax(1).tolist()


def test_predict_equals_the_deployments_answers(url, deployment, digits, fitted_folder):
    info = httpx.get(f"{url}/v1/info", timeout=TIMEOUT).json()
    x = torch.from_numpy(digits)
    for strategy, seed in ((None, None), ("seenn1@0.8+s2", None), ("router@steps,share=0.1", 7), ("seenn2@beta=0.05", 3)):
        payload = {"inputs": digits.tolist()} | ({} if strategy is None else {"strategy": strategy}) | {"seed": seed}
        response = httpx.post(f"{url}/v1/predict", json=payload, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        body = response.json()
        name = strategy or info["default_strategy"]
        assert body["strategy"] == name
        expected = prediction_rows(deployment.predict(x, name, seed=seed))
        got = body["predictions"]
        assert [{k: v for k, v in r.items() if k != "energy_uj"} for r in got] == [
            {k: v for k, v in r.items() if k != "energy_uj"} for r in expected
        ], name
        assert [r["energy_uj"] for r in got] == pytest.approx([r["energy_uj"] for r in expected], rel=1e-6), name
        assert set(got[0]) == {"index", "answer", "system", "exit", "timesteps", "energy_uj", "degraded"}


def test_info_names_the_fit(url, deployment, fitted_folder):
    info = httpx.get(f"{url}/v1/info", timeout=TIMEOUT).json()
    s2_bytes = (fitted_folder / "checkpoints" / "system2.safetensors").read_bytes()
    results = json.loads((fitted_folder / "results.json").read_text())
    energy = {s["name"]: s["energy_uj"] for s in results["strategies"]}
    best = [n for n in results["best_within_half_point_of_system2"].values() if n in deployment.strategies]
    assert info == {
        "fastslow": fastslow.pipeline.versions()["fastslow"],
        "input_shape": [1, 8, 8],
        "classes": 10,
        "system2": {
            "macs": results["systems"]["system2"]["macs"],
            "parameters": results["systems"]["system2"]["parameters"],
            "sha256": hashlib.sha256(s2_bytes).hexdigest(),
        },
        "strategies": deployment.strategies,
        "default_strategy": min(best, key=energy.__getitem__) if best else "system2",
    }
    assert deployment.system2_sha256 == info["system2"]["sha256"]
    assert httpx.get(f"{url}/healthz", timeout=TIMEOUT).json() == {"status": "ok"}


def _image(value=0.5, shape=(1, 8, 8)):
    return np.full(shape, value).tolist()


JSON = {"content-type": "application/json"}
BAD = {
    "malformed JSON": ("/v1/system2", b'{"inputs": [', JSON, "not valid JSON"),
    "not an object": ("/v1/system2", b"[1, 2]", JSON, '"inputs"'),
    "no inputs key": ("/v1/system2", b'{"x": []}', JSON, '"inputs"'),
    "empty inputs": ("/v1/system2", json.dumps({"inputs": []}).encode(), JSON, "no inputs"),
    "wrong shape": ("/v1/system2", json.dumps({"inputs": [_image(shape=(1, 8, 7))]}).encode(), JSON, "[N, 1, 8, 8]"),
    "flat input": ("/v1/system2", json.dumps({"inputs": [[0.5] * 64]}).encode(), JSON, "[N, 1, 8, 8]"),
    "ragged": ("/v1/system2", json.dumps({"inputs": [_image(), [[0.5]]]}).encode(), JSON, "regular array"),
    "strings": ("/v1/system2", json.dumps({"inputs": [[[["a"] * 8] * 8]]}).encode(), JSON, "numbers"),
    "NaN": ("/v1/system2", b'{"inputs": [' + json.dumps(_image()).replace("0.5", "NaN", 1).encode() + b"]}", JSON, "NaN"),
    "inf": ("/v1/system2", b'{"inputs": [' + json.dumps(_image()).replace("0.5", "Infinity", 1).encode() + b"]}", JSON, "NaN"),
    "1e400": ("/v1/system2", b'{"inputs": [' + json.dumps(_image()).replace("0.5", "1e400", 1).encode() + b"]}", JSON, "NaN"),
    "-0.5": ("/v1/system2", json.dumps({"inputs": [_image(-0.5)]}).encode(), JSON, "outside [0, 1]"),
    "1.5": ("/v1/system2", json.dumps({"inputs": [_image(), _image(1.5)]}).encode(), JSON, "outside [0, 1]"),
    "huge integer": (
        "/v1/system2",
        b'{"inputs": [' + json.dumps(_image()).replace("0.5", "1" * 40, 1).encode() + b"]}",
        JSON,
        "",
    ),  # fmt: skip
    "too many inputs": ("/v1/system2", _npy(np.zeros((1025, 1, 8, 8), np.float32)), {"content-type": NPY}, "at most 1024"),
    "bad npy": ("/v1/system2", b"\x93NUMPY garbage", {"content-type": NPY}, "not an npy array"),
    "npy wrong shape": ("/v1/system2", _npy(np.zeros((2, 64), np.float32)), {"content-type": NPY}, "[N, 1, 8, 8]"),
    "npy object array": ("/v1/system2", _npy(np.array([None, 1], dtype=object)), {"content-type": NPY}, "not an npy array"),
    "npy out of range": ("/v1/system2", _npy(np.full((1, 1, 8, 8), 2.0, np.float32)), {"content-type": NPY}, "outside [0, 1]"),
    "unknown strategy": (
        "/v1/predict",
        json.dumps({"inputs": [_image()], "strategy": "seenn1@0.123"}).encode(),
        JSON,
        "use one of system1, system2",
    ),  # fmt: skip
    "label reference": (
        "/v1/predict",
        json.dumps({"inputs": [_image()], "strategy": "oracle"}).encode(),
        JSON,
        "reads the labels",
    ),  # fmt: skip
    "strategy not a name": ("/v1/predict", json.dumps({"inputs": [_image()], "strategy": 3}).encode(), JSON, "strategy"),
    "seed not an integer": ("/v1/predict", json.dumps({"inputs": [_image()], "seed": "x"}).encode(), JSON, "seed"),
    "seed a bool": ("/v1/predict", json.dumps({"inputs": [_image()], "seed": True}).encode(), JSON, "seed"),
    "seed out of range": ("/v1/predict", json.dumps({"inputs": [_image()], "seed": -1}).encode(), JSON, "seed -1"),
    "predict NaN": ("/v1/predict", b'{"inputs": [' + json.dumps(_image()).replace("0.5", "NaN", 1).encode() + b"]}", JSON, "NaN"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_requests_get_422_and_one_line(url, case):
    route, body, headers, named = BAD[case]
    response = httpx.post(f"{url}{route}", content=body, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 422, response.text
    reason = response.json()["error"]
    assert list(response.json()) == ["error"] and isinstance(reason, str) and "\n" not in reason and named in reason


def test_kept_alive_connections_do_not_wait_for_delayed_acks(url):
    """Without TCP_NODELAY, Nagle holds each response's body until the client's delayed ACK: >= 40 ms
    a request on Linux. The fastest of 20 requests on one connection shows it, whatever the load."""
    with httpx.Client(timeout=TIMEOUT) as client:
        times = []
        for _ in range(20):
            started = time.perf_counter()
            assert client.get(f"{url}/healthz").status_code == 200
            times.append(time.perf_counter() - started)
    assert min(times[1:]) < 0.030, sorted(times)[:3]


def test_other_routes_and_methods_are_json_errors(url):
    for response, status in (
        (httpx.get(f"{url}/v2/nothing", timeout=TIMEOUT), 404),
        (httpx.get(f"{url}/v1/system2", timeout=TIMEOUT), 405),
        (httpx.put(f"{url}/healthz", timeout=TIMEOUT), 405),
    ):
        assert response.status_code == status and list(response.json()) == ["error"]


def test_a_body_over_the_limit_gets_413(deployment):
    small = {"inputs": [_image()]}
    big = json.dumps({"inputs": [_image()] * 30}).encode()  # about 9 KB
    with serving(create_app(deployment, max_body_bytes=4096)) as base:
        assert httpx.post(f"{base}/v1/system2", json=small, timeout=TIMEOUT).status_code == 200
        declared = httpx.post(f"{base}/v1/system2", content=big, headers=JSON, timeout=TIMEOUT)

        def chunks():  # no Content-Length: the streamed size is counted
            for start in range(0, len(big), 1000):
                yield big[start : start + 1000]

        streamed = httpx.post(f"{base}/v1/predict", content=chunks(), headers=JSON, timeout=TIMEOUT)
        for response in (declared, streamed):
            assert response.status_code == 413, response.text
            assert "over 4096 bytes" in response.json()["error"]
        assert "content-length" not in streamed.request.headers
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(deployment, max_body_bytes=0)


def test_a_token_guards_every_route_but_healthz(deployment, digits):
    with serving(create_app(deployment, token="s3cret")) as base:
        good = {"authorization": "Bearer s3cret"}
        assert httpx.get(f"{base}/healthz", timeout=TIMEOUT).status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}, {"authorization": "Basic s3cret"}):
            for method, route in (("GET", "/v1/info"), ("GET", "/metrics"), ("POST", "/v1/system2"), ("POST", "/v1/predict")):
                response = httpx.request(method, f"{base}{route}", headers=headers, json={"inputs": [_image()]}, timeout=TIMEOUT)
                assert response.status_code == 401, (headers, route)
                assert "token" in response.json()["error"] and response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{base}/v1/info", headers=good, timeout=TIMEOUT).status_code == 200
        response = httpx.post(f"{base}/v1/system2", headers=good, json={"inputs": digits[:2].tolist()}, timeout=TIMEOUT)
        assert response.status_code == 200
        assert _metric(base, "fastslow_http_errors_total", {"route": "/v1/system2", "status": "401"}, good) == 4


def test_concurrent_requests_share_one_system2_batch(deployment, digits):
    n = 8
    # The batch waits up to 10 s for more, but runs as soon as it holds max_batch = n inputs.
    with serving(create_app(deployment, max_batch=n, max_wait_ms=10_000)) as base:
        with ThreadPoolExecutor(n) as pool:
            started = time.monotonic()
            responses = list(
                pool.map(
                    lambda i: httpx.post(f"{base}/v1/system2", json={"inputs": digits[i : i + 1].tolist()}, timeout=TIMEOUT),
                    range(n),
                )
            )
        assert time.monotonic() - started < 8.0  # full, so it did not wait out max_wait
        with torch.no_grad():
            local = deployment.system2(torch.from_numpy(digits[:n])).numpy()
        for i, response in enumerate(responses):
            assert response.status_code == 200
            np.testing.assert_allclose(response.json()["logits"][0], local[i], atol=1e-5, rtol=0)
        assert _metric(base, "fastslow_system2_batch_size_count") == 1
        assert _metric(base, "fastslow_system2_batch_size_sum") == n
        assert _metric(base, "fastslow_system2_batch_size_bucket", {"le": "4.0"}) == 0


def test_a_full_queue_answers_503_with_retry_after(deployment, digits):
    with serving(create_app(deployment, max_queue=4, max_batch=64, max_wait_ms=1500)) as base:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{base}/v1/system2", json={"inputs": digits[:4].tolist()}, timeout=TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while _metric(base, "fastslow_queued_inputs", {"queue": "system2"}) < 4:  # it waits for more, up to 1.5 s
                assert time.monotonic() < deadline and not first.done()
                time.sleep(0.02)
            refused = httpx.post(f"{base}/v1/system2", json={"inputs": digits[4:5].tolist()}, timeout=TIMEOUT)
            assert refused.status_code == 503 and "over capacity" in refused.json()["error"]
            assert int(refused.headers["retry-after"]) >= 1
            assert first.result().status_code == 200
        assert httpx.post(f"{base}/v1/system2", json={"inputs": digits[4:5].tolist()}, timeout=TIMEOUT).status_code == 200


def test_metrics_are_prometheus_text(url, digits):
    httpx.post(f"{url}/v1/system2", json={"inputs": digits[:3].tolist()}, timeout=TIMEOUT)
    httpx.post(f"{url}/v1/system2", content=b"{", headers=JSON, timeout=TIMEOUT)
    response = httpx.get(f"{url}/metrics", timeout=TIMEOUT)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in prometheus_parser.text_string_to_metric_families(response.text)}
    assert families["fastslow_http_requests"].type == "counter"
    assert families["fastslow_http_errors"].type == "counter"
    assert families["fastslow_http_request_duration_seconds"].type == "histogram"
    assert families["fastslow_system2_batch_size"].type == "histogram"
    assert _metric(url, "fastslow_http_requests_total", {"route": "/v1/system2", "status": "200"}) >= 1
    assert _metric(url, "fastslow_http_errors_total", {"route": "/v1/system2", "status": "422"}) >= 1
    assert _metric(url, "fastslow_http_request_duration_seconds_count", {"route": "/v1/system2"}) >= 2
    statuses = {s.labels["status"] for s in families["fastslow_http_requests"].samples if "status" in s.labels}
    assert not any(status.startswith("5") for status in statuses), statuses  # never a 500, whatever came before


def test_sigterm_finishes_the_request_in_flight(fitted_folder, deployment, digits):
    """The CLI in a subprocess: its startup line, its token from the environment, and SIGTERM while a
    request waits for its batch (max wait 3 s): the request gets 200, the process exits 0."""
    src = str(Path(fastslow.__file__).parents[1])
    env = os.environ | {"FASTSLOW_API_TOKEN": "tok", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = [sys.executable, "-m", "fastslow.cli", "serve", str(fitted_folder), "--port", "0", "--max-wait-ms", "3000"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()  # printed once it accepts connections
        match = re.fullmatch(r"serving (\S+) on http://127\.0\.0\.1:(\d+) \(System 2 sha256 ([0-9a-f]{64})\)\n", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        assert match[3] == deployment.system2_sha256
        base, good = f"http://127.0.0.1:{match[2]}", {"authorization": "Bearer tok"}
        assert httpx.get(f"{base}/v1/info", timeout=TIMEOUT).status_code == 401
        with ThreadPoolExecutor(1) as pool:
            body = {"inputs": digits[:2].tolist()}
            in_flight = pool.submit(httpx.post, f"{base}/v1/system2", json=body, headers=good, timeout=TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while _metric(base, "fastslow_queued_inputs", {"queue": "system2"}, good) < 2:
                assert time.monotonic() < deadline and not in_flight.done()
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            response = in_flight.result()
        assert response.status_code == 200
        with torch.no_grad():
            np.testing.assert_allclose(
                response.json()["logits"], deployment.system2(torch.from_numpy(digits[:2])).numpy(), atol=1e-5, rtol=0
            )
        assert process.wait(TIMEOUT) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_serve_refuses_what_it_cannot_serve(tmp_path, capsys, monkeypatch, fitted_folder):
    def one_line_error(argv, named):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1, err

    one_line_error(["serve", str(tmp_path)], "holds no config.json")
    one_line_error(["serve", str(tmp_path / "nowhere")], "does not exist")
    with listen("127.0.0.1", 0) as taken:
        taken.listen()
        one_line_error(["serve", str(fitted_folder), "--port", str(taken.getsockname()[1])], "cannot listen on 127.0.0.1:")
    monkeypatch.setenv("FASTSLOW_API_TOKEN", " ")
    one_line_error(["serve", str(tmp_path)], "FASTSLOW_API_TOKEN is set but empty")
    monkeypatch.delenv("FASTSLOW_API_TOKEN")
    monkeypatch.delitem(sys.modules, "fastslow.serving.http", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the serve extra were not installed
    assert main(["serve", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: fastslow serve needs the serve extra: pip install 'fastslow[serve]'\n"


@pytest.mark.parametrize(
    "option",
    [
        ["--port", "70000"],
        ["--port", "-1"],
        ["--max-batch", "0"],
        ["--max-wait-ms", "nan"],
        ["--max-wait-ms", "-1"],
        ["--max-queue", "x"],
        ["--max-body-bytes", "10"],
    ],
)
def test_serve_options_are_checked(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(tmp_path), *option])
    assert exit_.value.code == 2 and option[0] in capsys.readouterr().err
