"""System 2 behind ``fastslow serve``, for a System 1 at the edge: the client escalations go through.

:class:`RemoteSystem2` is a :class:`~fastslow.serving.escalation.System2Endpoint`: it sends only the
inputs the policy escalated, ``max_batch`` per request, to ``POST /v1/system2`` as a float32
``application/x-npy`` body (the payload :func:`fastslow.energy.escalation_bytes` prices), with a
timeout, bounded retries with exponential backoff, and a :class:`CircuitBreaker`. It sends
``Authorization: Bearer $FASTSLOW_API_TOKEN`` where that variable is set.

Before the first escalation, and again after every outage, it reads ``GET /v1/info`` and refuses
(:class:`~fastslow.errors.ServiceError`) a service hosting another System 2 (the SHA-256 of
``system2.safetensors``), another input shape or class count. A 401 is refused the same way: a
user's error, not an outage. Anything else that fails (connection refused, timeout, 5xx after the
retries, the breaker open) leaves those inputs unreached: :class:`~fastslow.serving.FastSlow`
answers them with System 1 (degraded). One client per thread.
"""

from __future__ import annotations

import io
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fastslow.errors import ConfigError, ServiceError
from fastslow.serving.escalation import S2Reply

TOKEN_ENV = "FASTSLOW_API_TOKEN"
NPY = "application/x-npy"
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RETRIES = 2
DEFAULT_BATCH = 64
DEFAULT_BREAKER_FAILURES = 3  # consecutive failed attempts that open the circuit breaker
DEFAULT_BREAKER_COOLDOWN_S = 5.0  # seconds open before one trial request
# Retries wait backoff_s · 2^k, at most this long (a 503's Retry-After is honoured up to it too).
MAX_BACKOFF_S = 2.0


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures → half-open once ``cooldown_s`` has passed
    (one trial request) → closed on its success, open again on its failure.

    ``clock``: seconds, monotonic (a test passes a fake one). Thread-safe."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(
        self,
        failures: int = DEFAULT_BREAKER_FAILURES,
        cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(failures, int) and not isinstance(failures, bool) and failures >= 1):
            raise ConfigError(
                f"the circuit breaker opens after failures ≥ 1, got {failures!r}: pass e.g. --s2-breaker-failures 3"
            )
        if not (isinstance(cooldown_s, int | float) and math.isfinite(cooldown_s) and cooldown_s >= 0):
            raise ConfigError(
                f"the circuit breaker's cool-down must be ≥ 0 seconds, got {cooldown_s!r}: pass e.g. --s2-breaker-cooldown 5"
            )
        self.failures, self.cooldown_s, self.clock = failures, float(cooldown_s), clock
        self.state = self.CLOSED
        self.consecutive = 0  # failures in a row while closed
        self.opened_at = 0.0
        self.opened = 0  # times it opened
        self._trial = False  # a half-open trial is under way
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a request may go now (half-open: the one trial, until its outcome is recorded)."""
        with self._lock:
            if self.state == self.OPEN and self.clock() - self.opened_at >= self.cooldown_s:
                self.state, self._trial = self.HALF_OPEN, False
            if self.state == self.CLOSED:
                return True
            if self.state == self.HALF_OPEN and not self._trial:
                self._trial = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self.state, self.consecutive, self._trial = self.CLOSED, 0, False

    def record_failure(self) -> None:
        with self._lock:
            self.consecutive += 1
            if self.state == self.HALF_OPEN or self.consecutive >= self.failures:
                if self.state != self.OPEN:
                    self.opened += 1
                self.state, self.opened_at, self._trial = self.OPEN, self.clock(), False


@dataclass(frozen=True)
class System2Identity:
    """What the local fit's System 2 is: the service must host the same (``sha256`` None: not checked)."""

    sha256: str | None
    input_shape: tuple[int, ...]
    classes: int


@dataclass
class RemoteStats:
    """Counts since the client was made: requests that got an HTTP answer, attempts that failed
    (unreachable, timeout, 5xx), inputs System 2 answered, inputs left unreached (degraded)."""

    requests: int = 0
    failures: int = 0
    answered: int = 0
    degraded: int = 0


class _Unreachable(Exception):
    """An attempt failed in a way an outage explains (retry, then degrade)."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def check_url(url: str) -> str:
    """``url`` without a trailing slash; a :class:`ConfigError` unless it is an http(s) URL with a host."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"System 2's URL {url!r} is not an http(s) URL: pass e.g. --s2-url http://127.0.0.1:8000")
    return str(url).rstrip("/")


def check_client_options(timeout_s: float, retries: int, max_batch: int) -> None:
    """A :class:`ConfigError` naming the first option out of range (the CLI's --s2-* flags)."""
    if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and 0 < timeout_s <= 600):
        raise ConfigError(f"System 2's timeout must be in (0, 600] seconds, got {timeout_s!r}: pass e.g. --s2-timeout 5")
    if not (isinstance(retries, int) and 0 <= retries <= 10):
        raise ConfigError(f"System 2's retries must be an integer in 0..10, got {retries!r}: pass e.g. --s2-retries 2")
    if not (isinstance(max_batch, int) and 1 <= max_batch <= 65536):
        raise ConfigError(f"System 2's batch must be an integer in 1..65536 inputs, got {max_batch!r}: pass e.g. --s2-batch 64")


class RemoteSystem2:
    """System 2 answered by a ``fastslow serve`` at ``url`` (see the module's docstring).

    ``expect``: the local fit's System 2 (checked against ``/v1/info``). ``timeout_s``: each phase of
    a request (connect, send, read). ``retries``: attempts after the first, waiting ``backoff_s`` ·
    2^k (at most :data:`MAX_BACKOFF_S`). ``max_batch``: inputs per request. ``breaker``: default
    3 failures, 5 s cool-down. ``token``: default ``$FASTSLOW_API_TOKEN``."""

    def __init__(
        self,
        url: str,
        expect: System2Identity,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        max_batch: int = DEFAULT_BATCH,
        backoff_s: float = 0.1,
        breaker: CircuitBreaker | None = None,
        token: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx

        check_client_options(timeout_s, retries, max_batch)
        self.url, self.expect = check_url(url), expect
        self.retries, self.max_batch, self.backoff_s, self._sleep = retries, max_batch, backoff_s, sleep
        self.breaker = breaker or CircuitBreaker()
        token = os.environ.get(TOKEN_ENV) if token is None else token
        self._has_token = bool(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)
        self._checked = False  # /v1/info matched since the last outage
        self.stats = RemoteStats()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteSystem2:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def check(self) -> bool:
        """Read ``/v1/info`` now, if the breaker lets a request go: True where the service matched,
        False where it could not be reached (then it is checked before its first answer is used);
        a :class:`ServiceError` where it hosts another System 2 or refuses the token."""
        if self._checked:
            return True
        if not self.breaker.allow():
            return False
        try:
            self._check_identity()
        except _Unreachable:
            self._failed()
            return False
        self.breaker.record_success()
        return True

    def answer(self, x: torch.Tensor) -> S2Reply:
        """System 2's answers for ``x`` [M, *input_shape]; the inputs it could not reach have
        ``reached`` False (their answers are 0)."""
        x = x.detach().to("cpu", torch.float32)
        answers = torch.zeros(len(x), dtype=torch.long)
        reached = torch.zeros(len(x), dtype=torch.bool)
        for start in range(0, len(x), self.max_batch):
            part = slice(start, start + self.max_batch)
            got = self._exchange(x[part])
            if got is not None:
                answers[part], reached[part] = got, True
        self.stats.answered += int(reached.sum())
        self.stats.degraded += int((~reached).sum())
        return S2Reply(answers, reached)

    def _exchange(self, part: torch.Tensor) -> torch.Tensor | None:
        """One batch's answers, with retries through the breaker; None when unreachable."""
        for attempt in range(self.retries + 1):
            if not self.breaker.allow():
                return None
            try:
                if not self._checked:
                    self._check_identity()  # the service may have come back as another one
                got = self._post(part)
            except _Unreachable as err:
                self._failed()
                if attempt == self.retries or self.breaker.state == CircuitBreaker.OPEN:
                    return None
                self._sleep(min(MAX_BACKOFF_S, max(self.backoff_s * 2**attempt, err.retry_after)))
                continue
            self.breaker.record_success()
            return got
        return None

    def _failed(self) -> None:
        self.stats.failures += 1
        self.breaker.record_failure()
        if self.breaker.state == CircuitBreaker.OPEN:
            self._checked = False  # whatever answers after the outage is checked again

    def _request(self, method: str, path: str, **kwargs):
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as err:  # refused, reset, timed out
            raise _Unreachable(f"{type(err).__name__}: {err}") from None
        self.stats.requests += 1
        if response.status_code == 401:
            fix = "set FASTSLOW_API_TOKEN to the token the service was started with"
            raise ServiceError(
                f"the System 2 service at {self.url} refused {'the' if self._has_token else 'a missing'} token (401): {fix}"
            )
        if response.status_code >= 500:
            raise _Unreachable(f"HTTP {response.status_code}", _retry_after(response.headers.get("Retry-After")))
        return response

    def _check_identity(self) -> None:
        response = self._request("GET", "/v1/info")
        what = f"the System 2 service at {self.url}"
        try:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            info = response.json()
            theirs = System2Identity(
                str(info["system2"]["sha256"]), tuple(int(d) for d in info["input_shape"]), int(info["classes"])
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ServiceError(
                f"{what} answered /v1/info with no fit's description ({err}): pass the URL of a `fastslow serve`"
            ) from None
        ours = self.expect
        if theirs.input_shape != tuple(ours.input_shape) or theirs.classes != ours.classes:
            raise ServiceError(
                f"{what} takes inputs {theirs.input_shape} with {theirs.classes} classes, the local fit "
                f"{tuple(ours.input_shape)} with {ours.classes}: serve this fit's folder there"
            )
        if ours.sha256 is not None and theirs.sha256 != ours.sha256:
            raise ServiceError(
                f"{what} hosts another System 2 (checkpoint sha256 {theirs.sha256[:12]}…, the local fit's "
                f"{ours.sha256[:12]}…): serve this fit's folder there, or predict with the fit it serves"
            )
        self._checked = True

    def _post(self, part: torch.Tensor) -> torch.Tensor:
        buffer = io.BytesIO()
        np.save(buffer, part.numpy().astype(np.float32, copy=False))
        response = self._request("POST", "/v1/system2", content=buffer.getvalue(), headers={"Content-Type": NPY})
        if response.status_code == 413:
            raise ServiceError(
                f"the System 2 service at {self.url} refused {len(part)} inputs in one request as too large (413): "
                "pass a smaller --s2-batch"
            )
        if response.status_code != 200:
            raise ServiceError(
                f"the System 2 service at {self.url} refused the escalated inputs (HTTP {response.status_code}: "
                f"{_reason(response)}): check the inputs are in the fit's shape, finite, in [0, 1]"
            )
        try:
            answers = torch.as_tensor(response.json()["answers"], dtype=torch.long)
            valid = answers.shape == (len(part),) and bool(((answers >= 0) & (answers < self.expect.classes)).all())
        except (ValueError, KeyError, TypeError, RuntimeError):
            valid = False
        if not valid:
            raise ServiceError(
                f"the System 2 service at {self.url} answered {len(part)} inputs with no valid answers: "
                "is it a `fastslow serve` of this fastslow version?"
            )
        return answers


def _retry_after(header: str | None) -> float:
    try:
        return max(0.0, float(header)) if header else 0.0
    except ValueError:
        return 0.0


def _reason(response) -> str:
    try:
        return " ".join(str(response.json()["error"]).split())[:200]
    except (ValueError, KeyError, TypeError):
        return " ".join(response.text.split())[:200]
