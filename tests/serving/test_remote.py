"""The edge side: System 1 and the policy here, System 2 behind a real `fastslow serve` app (uvicorn on
127.0.0.1, an ephemeral port). Remote answers equal local ones; a service that is down degrades to
System 1's answers (every input answered, in order, exit 0); the breaker lets escalations through
again once it is back; another System 2 or a wrong token is refused with exit 2."""

import dataclasses
import json
import socket
import threading
import time
from contextlib import contextmanager

import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import fastslow  # noqa: E402
from fastslow.cli import main  # noqa: E402
from fastslow.errors import ConfigError, ServiceError  # noqa: E402
from fastslow.serving.http import create_app, listen  # noqa: E402
from fastslow.serving.remote import CircuitBreaker, RemoteSystem2, System2Identity  # noqa: E402

TIMEOUT = 20.0  # seconds, for a server to start or stop
# A strategy that escalates about 40% of the tiny fit's test split after all T steps, one that sends a
# few inputs to System 2 before System 1 runs (SEENN-II), and System 2 for every input.
MIXED, BEFORE_S1, ALL = "router@share=0.4", "seenn2@beta=0.05", "system2"


class Service:
    """A `fastslow serve` app on a uvicorn thread, on 127.0.0.1; stopped and started again on its port."""

    def __init__(self, app, port: int = 0) -> None:
        self.app, self.port, self.server, self.thread = app, port, None, None

    def start(self) -> "Service":
        sock = listen("127.0.0.1", self.port)
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        self._sock = sock
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the server did not stop"
        self._sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def serving(app):
    service = Service(app).start()
    try:
        yield service
    finally:
        if service.thread.is_alive():
            service.stop()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def deployment(fitted_folder):
    return fastslow.load(fitted_folder)


@pytest.fixture(scope="module")
def service(deployment):
    with serving(create_app(deployment)) as running:
        yield running


def predict(folder, strategy, out, *extra) -> tuple[int, list[dict], dict]:
    code = main(["predict", str(folder), "--strategy", strategy, "--out", str(out), "--quiet", *extra])
    if code != 0:
        return code, [], {}
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return code, lines, json.loads((out / "summary.json").read_text())


def test_breaker_opens_half_opens_for_one_trial_and_closes():
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown_s=10.0, clock=lambda: now[0])
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()  # one failure of two
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"  # a success reset the count
    breaker.record_failure()
    assert breaker.state == "open" and breaker.opened == 1 and not breaker.allow()
    now[0] = 9.99
    assert not breaker.allow()
    now[0] = 10.0
    assert breaker.allow() and breaker.state == "half-open"
    assert not breaker.allow()  # one trial at a time
    breaker.record_failure()  # the trial failed: open again, for a whole cool-down from now
    assert breaker.state == "open" and breaker.opened == 2
    now[0] = 19.99
    assert not breaker.allow()
    now[0] = 20.0
    assert breaker.allow() and breaker.state == "half-open"
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "closed"  # closing reset the count
    with pytest.raises(ConfigError, match="failures"):
        CircuitBreaker(failures=0)


def test_client_retries_with_backoff_then_the_breaker_stops_trying(deployment):
    spec = deployment.system1.spec
    identity = System2Identity(deployment.system2_sha256, tuple(spec.input_shape), spec.n_classes)
    waits = []
    client = RemoteSystem2(
        f"http://127.0.0.1:{free_port()}",
        identity,
        retries=3,
        backoff_s=0.05,
        breaker=CircuitBreaker(failures=3, cooldown_s=60.0),
        sleep=waits.append,
    )
    x = torch.rand(5, *spec.input_shape)
    reply = client.answer(x)
    # Attempts 1, 2, 3 refused (waiting 0.05, 0.1 between them); the third opens the breaker: no fourth.
    assert not reply.reached.any() and waits == [0.05, 0.1]
    assert client.stats.failures == 3 and client.breaker.state == "open" and client.stats.degraded == 5
    reply = client.answer(x)
    assert not reply.reached.any() and client.stats.failures == 3  # the open breaker sent nothing
    client.close()


def test_remote_answers_equal_local_ones(fitted_folder, service, tmp_path):
    for strategy in (MIXED, BEFORE_S1, ALL):
        code, local, local_summary = predict(fitted_folder, strategy, tmp_path / f"local-{strategy}")
        assert code == 0
        code, remote, summary = predict(fitted_folder, strategy, tmp_path / f"remote-{strategy}", "--s2-url", service.url)
        assert code == 0 and len(remote) == len(local)
        assert 0 < sum(line["system"] == "system2" for line in local)
        # Every input, in order: the same answer, system, exit, steps and µJ; none degraded.
        assert remote == local
        assert summary["degraded"] == 0 and summary["system2_url"] == service.url
        assert summary["energy_uj"] == local_summary["energy_uj"]


def test_a_service_that_is_down_degrades_to_system1_then_recovers(fitted_folder, deployment, tmp_path):
    code, s1_only, _ = predict(fitted_folder, "system1", tmp_path / "s1")
    code, local, _ = predict(fitted_folder, MIXED, tmp_path / "local")
    escalated = [line["system"] == "system2" for line in local]
    service = Service(create_app(deployment), port=free_port())  # not started: nothing listens
    code, down, summary = predict(fitted_folder, MIXED, tmp_path / "down", "--s2-url", service.url, "--s2-retries", "1")
    assert code == 0 and len(down) == len(local) and [line["index"] for line in down] == list(range(len(local)))
    assert summary["degraded"] == sum(escalated) > 0 and summary["escalation_rate"] == 0
    for was_escalated, line, ours, s1 in zip(escalated, down, local, s1_only):
        assert line["degraded"] == was_escalated and line["system"] == "system1"
        if was_escalated:
            # The router escalates after all T steps: System 1's own answer there is system1's, and
            # the input pays System 1 and the router (no System 2, no link).
            assert (line["answer"], line["exit"], line["timesteps"]) == (s1["answer"], s1["exit"], s1["timesteps"])
            s2_uj = deployment.profile.E_MAC_pJ * deployment.s2_macs / 1e6
            assert line["energy_uj"] == pytest.approx(ours["energy_uj"] - s2_uj, abs=1e-6 * s2_uj)  # (float32 sums)
        else:
            assert line == ours

    # The Python API: down, then the service starts on that port; after the cool-down the breaker's
    # trial reads /v1/info, the escalations go through again and the answers equal the local ones.
    model = fastslow.load(fitted_folder, s2_url=service.url, s2_retries=0)
    model.remote.breaker = CircuitBreaker(failures=1, cooldown_s=0.2)
    x = torch.as_tensor(_test_inputs(fitted_folder))
    first = model.predict(x, MIXED)
    assert int(first.degraded.sum()) == sum(escalated) and not first.escalated.any()
    assert model.remote.breaker.state == "open"
    service.start()
    try:
        time.sleep(0.25)
        again = model.predict(x, MIXED)
        assert model.remote.breaker.state == "closed" and not again.degraded.any()
        assert again.escalated.tolist() == escalated
        assert again.predictions.tolist() == [line["answer"] for line in local]
        # Killed again mid-use: the next escalations degrade, nothing is dropped.
        service.stop()
        third = model.predict(x, MIXED)
        assert len(third.predictions) == len(x) and int(third.degraded.sum()) == sum(escalated)
    finally:
        if service.thread.is_alive():
            service.stop()
        model.remote.close()


def _test_inputs(folder):
    """The fit's test split, as `fastslow predict` reads it."""
    from fastslow.pipeline import load_fit

    return load_fit(folder).splits.x_test


def test_inputs_system1_never_ran_for_are_answered_by_a_full_system1_run(fitted_folder, tmp_path):
    code, lines, summary = predict(fitted_folder, ALL, tmp_path / "down", "--s2-url", f"http://127.0.0.1:{free_port()}")
    assert code == 0 and summary["degraded"] == len(lines) > 0
    steps = fastslow.load(fitted_folder).system1.spec.timesteps
    assert all(line["degraded"] and line["timesteps"] == steps and line["exit"] is not None for line in lines)
    assert summary["energy_terms_uj"]["s2"] == 0 and summary["energy_terms_uj"]["s1_synaptic"] > 0


def test_another_system2_is_refused(fitted_folder, deployment, tmp_path, capsys):
    other = dataclasses.replace(deployment, system2_sha256="0" * 64)
    with serving(create_app(other)) as service:
        code, _, _ = predict(fitted_folder, MIXED, tmp_path / "other", "--s2-url", service.url)
        err = capsys.readouterr().err
        assert code == 2 and "hosts another System 2" in err and len(err.strip().splitlines()) == 1
        spec = deployment.system1.spec
        shaped = RemoteSystem2(service.url, System2Identity(None, (1, 9, 9), spec.n_classes))
        with pytest.raises(ServiceError, match=r"takes inputs \(1, 8, 8\)"):
            shaped.check()
        shaped.close()


def test_a_service_down_at_start_is_checked_when_it_comes_back(fitted_folder, deployment):
    other = dataclasses.replace(deployment, system2_sha256="f" * 64)
    service = Service(create_app(other), port=free_port())
    model = fastslow.load(fitted_folder, s2_url=service.url, s2_retries=0)  # unreachable: no error
    model.remote.breaker = CircuitBreaker(failures=1, cooldown_s=0.0)
    service.start()
    try:
        with pytest.raises(ServiceError, match="hosts another System 2"):
            model.predict(torch.as_tensor(_test_inputs(fitted_folder)), MIXED)
    finally:
        service.stop()
        model.remote.close()


def test_a_wrong_or_missing_token_exits_2(fitted_folder, deployment, tmp_path, capsys, monkeypatch):
    with serving(create_app(deployment, token="right-token")) as service:
        monkeypatch.delenv("FASTSLOW_API_TOKEN", raising=False)
        code, _, _ = predict(fitted_folder, MIXED, tmp_path / "none", "--s2-url", service.url)
        assert code == 2 and "refused a missing token (401): set FASTSLOW_API_TOKEN" in capsys.readouterr().err
        monkeypatch.setenv("FASTSLOW_API_TOKEN", "wrong-token")
        code, _, _ = predict(fitted_folder, MIXED, tmp_path / "wrong", "--s2-url", service.url)
        assert code == 2 and "refused the token (401)" in capsys.readouterr().err
        monkeypatch.setenv("FASTSLOW_API_TOKEN", "right-token")
        code, lines, summary = predict(fitted_folder, MIXED, tmp_path / "right", "--s2-url", service.url)
        assert code == 0 and summary["degraded"] == 0 and any(line["system"] == "system2" for line in lines)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--s2-timeout", "0"], "outside"),
        (["--s2-retries", "-1"], "outside"),
        (["--s2-retries", "two"], "not an integer"),
        (["--s2-batch", "0"], "outside"),
        (["--s2-breaker-failures", "0"], "outside"),
        (["--s2-breaker-cooldown", "-1"], "outside"),
    ],
)
def test_bad_client_options_exit_2(fitted_folder, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(fitted_folder), "--strategy", MIXED, "--out", str(tmp_path), "--s2-url", "http://x:1", *flags])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_url_that_is_not_http_exits_2(fitted_folder, tmp_path, capsys):
    code, _, _ = predict(fitted_folder, MIXED, tmp_path / "o", "--s2-url", "ftp://127.0.0.1:21")
    err = capsys.readouterr().err
    assert code == 2 and "is not an http(s) URL" in err


def test_the_breaker_options_reach_the_client_and_the_summary(fitted_folder, tmp_path):
    """A dead service, 3 retries, a breaker open for the whole run: with failures = 1 the failed
    /v1/info check opens it and nothing more is tried; with the default 3, two more attempts fail first."""
    dead = f"http://127.0.0.1:{free_port()}"
    tried = {}
    for failures in (1, 3):
        flags = ["--s2-url", dead, "--s2-retries", "3", "--s2-breaker-cooldown", "600", "--s2-breaker-failures", str(failures)]
        code, lines, summary = predict(fitted_folder, MIXED, tmp_path / f"f{failures}", *flags)
        client = summary["system2_client"]
        assert code == 0 and summary["degraded"] == sum(line["degraded"] for line in lines) > 0
        assert client["breaker_failures"] == failures and client["breaker_cooldown_s"] == 600 and client["retries"] == 3
        assert client["breaker_opened"] == 1 and client["requests"] == 0
        tried[failures] = client["failures"]
    assert tried == {1: 1, 3: 3}
