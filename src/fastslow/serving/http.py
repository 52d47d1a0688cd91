"""System 2 of a fit as an HTTP service (``fastslow serve``): FastAPI + uvicorn + Prometheus metrics.

Routes (docs/serving.md, "HTTP API"): ``GET /healthz``, ``GET /v1/info``, ``POST /v1/system2``
(logits and answers, JSON or npy bodies), ``POST /v1/predict`` (the whole pipeline with a strategy),
``GET /metrics``. Every error is ``{"error": "one line"}`` with a 4xx (401, 404, 405, 413, 422) or
a 503 with ``Retry-After`` when the queue is full; never a 500 for anything a client sends.

Concurrent ``/v1/system2`` requests share System 2's forward passes: they wait in a queue bounded
in inputs (``max_queue``); a batch takes at most ``max_batch`` inputs and waits at most
``max_wait_ms`` for more, then System 2 runs in a worker thread (torch releases the GIL), so the
event loop keeps accepting and answering. ``/v1/predict`` runs :meth:`Deployment.predict` in one
worker thread of its own, one request at a time (a strategy's chunk planner is not thread-safe),
with at most ``max_queue`` inputs waiting.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import math
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

import fastslow
from fastslow.config import check_seed
from fastslow.data import check_inputs
from fastslow.errors import DataError, FastslowError
from fastslow.serving.deploy import Deployment, UnknownStrategy, prediction_rows

NPY = "application/x-npy"
ROUTES = ("/healthz", "/v1/info", "/v1/system2", "/v1/predict", "/metrics")
DEFAULTS = {"max_batch": 256, "max_wait_ms": 5.0, "max_queue": 1024, "max_body_bytes": 8 * 1024 * 1024}


class HTTPError(Exception):
    """A request answered with ``status`` and ``{"error": reason}`` (``headers`` added)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # One line, whatever the cause's text held.
    return JSONResponse({"error": " ".join(reason.split())}, status_code=status, headers=headers)


def check_options(*, max_batch: int, max_wait_ms: float, max_queue: int, max_body_bytes: int) -> None:
    """A ValueError naming the first option out of range."""
    if not (isinstance(max_batch, int) and max_batch >= 1):
        raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    if not (isinstance(max_wait_ms, int | float) and math.isfinite(max_wait_ms) and 0 <= max_wait_ms <= 60_000):
        raise ValueError(f"max_wait_ms must be a number of milliseconds in [0, 60000], got {max_wait_ms!r}")
    if not (isinstance(max_queue, int) and max_queue >= 1):
        raise ValueError(f"max_queue must be an integer >= 1 (inputs), got {max_queue!r}")
    if not (isinstance(max_body_bytes, int) and max_body_bytes >= 1024):
        raise ValueError(f"max_body_bytes must be an integer >= 1024, got {max_body_bytes!r}")


class _Metrics:
    """The app's Prometheus series, in a registry of its own (several apps in one process stay apart)."""

    def __init__(self, max_batch: int) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fastslow_http_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=self.registry
        )
        self.errors = Counter(
            "fastslow_http_errors",
            "HTTP requests answered with a 4xx or 5xx, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fastslow_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        sizes = sorted({2**k for k in range(int(math.log2(max_batch)) + 1)} | {max_batch})
        self.batch_size = Histogram(
            "fastslow_system2_batch_size", "Inputs per System 2 forward pass", buckets=sizes, registry=self.registry
        )
        self.queued = Gauge("fastslow_queued_inputs", "Inputs waiting, by queue", ["queue"], registry=self.registry)


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future


class _Batcher:
    """Gathers concurrent System 2 requests into forward passes of at most ``max_batch`` inputs."""

    def __init__(
        self, run: Callable[[np.ndarray], np.ndarray], *, max_batch: int, max_wait_s: float, max_queue: int, metrics: _Metrics
    ) -> None:
        self.run, self.max_batch, self.max_wait_s, self.max_queue, self.metrics = run, max_batch, max_wait_s, max_queue, metrics
        self.items: deque[_Item] = deque()
        self.queued = 0  # inputs waiting (not those in the pass running)
        self.wake = asyncio.Event()
        self.pass_seconds = 0.0  # a running mean of a forward pass's time, for Retry-After
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="fastslow-system2")

    def retry_after(self) -> str:
        """Seconds until the queue has likely drained (at least 1)."""
        passes = 1 + self.queued / self.max_batch
        return str(max(1, math.ceil(self.max_wait_s + passes * self.pass_seconds)))

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """System 2's logits for ``x`` [n, *input_shape]; HTTPError 503 if the queue cannot take them."""
        if self.queued + len(x) > self.max_queue:
            raise HTTPError(
                503,
                f"over capacity: {self.queued} inputs queued, at most {self.max_queue}: retry later",
                {"Retry-After": self.retry_after()},
            )
        item = _Item(x, asyncio.get_running_loop().create_future())
        self.items.append(item)
        self.queued += len(x)
        self.metrics.queued.labels("system2").set(self.queued)
        self.wake.set()
        return await item.future

    async def loop(self) -> None:
        """Take batches from the queue until cancelled."""
        clock = asyncio.get_running_loop().time
        while True:
            if not self.items:
                self.wake.clear()
                await self.wake.wait()
                continue
            deadline = clock() + self.max_wait_s
            while self.queued < self.max_batch and (left := deadline - clock()) > 0:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), left)
                except TimeoutError:
                    break
            batch, size = [], 0
            while self.items and (not batch or size + len(self.items[0].x) <= self.max_batch):
                item = self.items.popleft()
                batch.append(item)
                size += len(item.x)
            self.queued -= size
            self.metrics.queued.labels("system2").set(self.queued)
            x = np.concatenate([item.x for item in batch])
            try:
                logits = await asyncio.get_running_loop().run_in_executor(self.executor, self._forward, x)
            except Exception as err:  # System 2 failed (e.g. out of memory): each waiting request learns it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            start = 0
            for item in batch:
                if not item.future.done():  # (a request whose client left is cancelled)
                    item.future.set_result(logits[start : start + len(item.x)])
                start += len(item.x)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """System 2 over ``x`` in passes of at most ``max_batch`` (one request may hold more)."""
        started = time.perf_counter()
        parts = []
        for start in range(0, len(x), self.max_batch):
            part = x[start : start + self.max_batch]
            self.metrics.batch_size.observe(len(part))
            parts.append(self.run(part))
        self.pass_seconds = 0.8 * self.pass_seconds + 0.2 * (time.perf_counter() - started) / len(parts)
        return np.concatenate(parts)


def _parse_inputs(value: object, input_shape: tuple[int, ...], max_inputs: int) -> np.ndarray:
    """``value`` (a JSON list or an npy array) as float32 [N, *input_shape], finite, in [0, 1]; else HTTPError 422."""
    expected = f"[N, {', '.join(map(str, input_shape))}]"
    if isinstance(value, np.ndarray):
        array = value
    else:
        if not isinstance(value, list):
            raise HTTPError(422, f'"inputs" must be a list of inputs, each a nested list of shape {list(input_shape)}')
        try:
            array = np.asarray(value)
        except (ValueError, TypeError, OverflowError):  # ragged lists, numbers out of any dtype
            raise HTTPError(
                422, f"inputs are not a regular array: every input must be a nested list of shape {list(input_shape)}"
            ) from None
    if array.dtype.kind not in "iuf":
        raise HTTPError(422, f"inputs must be numbers in [0, 1] in an array {expected}, got {array.dtype} values")
    if array.ndim == 0:
        raise HTTPError(422, f"inputs must be an array {expected}, got a single number")
    if len(array) == 0:
        raise HTTPError(422, "no inputs: send at least one")
    if tuple(array.shape[1:]) != tuple(input_shape):
        raise HTTPError(422, f"inputs have shape {list(array.shape)}, the fit expects {expected}")
    if len(array) > max_inputs:
        raise HTTPError(422, f"{len(array)} inputs in one request, at most {max_inputs}: split them")
    array = array.astype(np.float32)
    try:
        check_inputs(array)
    except DataError as err:
        raise HTTPError(422, str(err)) from None
    return array


def _json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as err:  # (UnicodeDecodeError is a ValueError)
        raise HTTPError(422, f"the body is not valid JSON ({str(err)[:120]})") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise HTTPError(422, 'the body must be a JSON object with "inputs": [...]')
    return payload


def create_app(
    deployment: Deployment,
    *,
    max_batch: int = DEFAULTS["max_batch"],
    max_wait_ms: float = DEFAULTS["max_wait_ms"],
    max_queue: int = DEFAULTS["max_queue"],
    max_body_bytes: int = DEFAULTS["max_body_bytes"],
    token: str | None = None,
) -> FastAPI:
    """The HTTP app serving ``deployment`` (routes, errors and batching: the module's docstring).
    ``token``: when given, every route but ``/healthz`` needs ``Authorization: Bearer <token>``."""
    check_options(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, max_body_bytes=max_body_bytes)
    if token is not None and not token:
        raise ValueError("token must be a non-empty string or None")
    s1 = deployment.system1
    input_shape = tuple(s1.spec.input_shape)
    system2 = deployment.system2.eval()
    device = next(system2.parameters()).device
    metrics = _Metrics(max_batch)
    predict_executor = ThreadPoolExecutor(1, thread_name_prefix="fastslow-predict")
    predict_queued = 0
    info = {
        "fastslow": fastslow.__version__,
        "input_shape": list(input_shape),
        "classes": s1.spec.n_classes,
        "system2": {
            "macs": int(deployment.s2_macs),
            "parameters": sum(p.numel() for p in system2.parameters()),
            "sha256": deployment.system2_sha256,
        },
        "strategies": deployment.strategies,
        "default_strategy": deployment.default_strategy,
    }

    @torch.no_grad()
    def system2_logits(x: np.ndarray) -> np.ndarray:
        return system2(torch.from_numpy(x).to(device)).float().cpu().numpy()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = _Batcher(
            system2_logits, max_batch=max_batch, max_wait_s=max_wait_ms / 1000, max_queue=max_queue, metrics=metrics
        )
        app.state.batcher = batcher
        task = asyncio.create_task(batcher.loop())
        try:
            yield
        finally:
            task.cancel()
            batcher.executor.shutdown(wait=True)
            predict_executor.shutdown(wait=True)

    app = FastAPI(title="fastslow", version=info["fastslow"], lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.draining = False  # set on SIGTERM by run_server: /healthz answers 503 while requests finish

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, err: HTTPError) -> JSONResponse:
        return _error(err.status, err.reason, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        reason = {
            404: f"no route {request.url.path}: use one of {', '.join(ROUTES)}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return _error(err.status_code, reason.get(err.status_code, str(err.detail)), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        problem = err.errors()[0] if err.errors() else {}
        return _error(422, f"{'.'.join(map(str, problem.get('loc', ())))}: {problem.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:  # a bug of ours, not the client's input
        return _error(500, f"internal error ({type(err).__name__}): see the server's log")

    async def read_body(request: Request) -> bytes:
        """The body, at most ``max_body_bytes`` (its Content-Length and the bytes that came): else HTTPError 413."""
        too_large = HTTPError(413, f"the body is over {max_body_bytes} bytes: send fewer inputs per request")
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise HTTPError(422, f"Content-Length {length[:40]!r} is not a number")
            if int(length) > max_body_bytes:
                raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if app.state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/info")
    async def get_info() -> JSONResponse:
        return JSONResponse(info)

    @app.get("/metrics")
    async def get_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/system2")
    async def post_system2(request: Request) -> JSONResponse:
        body = await read_body(request)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == NPY:
            try:
                value = np.load(io.BytesIO(body), allow_pickle=False)
            except Exception as err:  # numpy raises ValueError, OSError, EOFError, … on a bad file
                raise HTTPError(422, f"the body is not an npy array ({type(err).__name__}: {str(err)[:120]})") from None
        else:
            value = _json_object(body)["inputs"]
        x = _parse_inputs(value, input_shape, max_queue)
        logits = await app.state.batcher.submit(x)
        return JSONResponse({"logits": logits.tolist(), "answers": logits.argmax(1).tolist()})

    @app.post("/v1/predict")
    async def post_predict(request: Request) -> JSONResponse:
        nonlocal predict_queued
        payload = _json_object(await read_body(request))
        strategy = payload.get("strategy")
        strategy = deployment.default_strategy if strategy is None else strategy
        if not isinstance(strategy, str):
            raise HTTPError(422, f'"strategy" must be a name, one of {", ".join(deployment.strategies)}')
        try:
            deployment.policy(strategy)
        except UnknownStrategy as err:
            raise HTTPError(422, str(err)) from None
        seed = payload.get("seed")
        if seed is not None:
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise HTTPError(422, f'"seed" must be an integer, got {json.dumps(seed)[:40]}')
            try:
                check_seed(seed)
            except FastslowError as err:
                raise HTTPError(422, str(err)) from None
        x = _parse_inputs(payload["inputs"], input_shape, max_queue)
        if predict_queued + len(x) > max_queue:
            raise HTTPError(
                503, f"over capacity: {predict_queued} inputs queued, at most {max_queue}: retry later", {"Retry-After": "1"}
            )
        predict_queued += len(x)
        metrics.queued.labels("predict").set(predict_queued)
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                predict_executor, lambda: deployment.predict(torch.from_numpy(x), strategy, seed=seed)
            )
        finally:
            predict_queued -= len(x)
            metrics.queued.labels("predict").set(predict_queued)
        return JSONResponse({"strategy": strategy, "predictions": prediction_rows(answer)})

    app.add_middleware(_Guard, token=token, metrics=metrics)
    return app


class _Guard:
    """ASGI middleware: the bearer token (every route but /healthz) and the request metrics."""

    def __init__(self, app, token: str | None, metrics: _Metrics) -> None:
        self.app, self.token, self.metrics = app, token, metrics

    def _authorized(self, scope: dict) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token.encode())
        return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"  # (bounded label values)
        started, status = time.perf_counter(), [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.token is not None and route != "/healthz" and not self._authorized(scope):
                response = _error(401, "missing or wrong token: send the header Authorization: Bearer <FASTSLOW_API_TOKEN>")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            code = str(status[0])
            self.metrics.requests.labels(route, code).inc()
            if status[0] >= 400:
                self.metrics.errors.labels(route, code).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (0: an ephemeral port); OSError if it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each connection (it checks sock.proto): else
    # Nagle holds a response's body, written after its headers, until the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def run_server(app: FastAPI, sock: socket.socket, *, on_ready: Callable[[], None] | None = None) -> None:
    """Serve ``app`` (from :func:`create_app`) on the bound ``sock`` until SIGTERM or SIGINT, then
    finish the requests in flight and return. ``on_ready()`` is called once it accepts connections."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=None, lifespan="on")
    server = uvicorn.Server(config)
    capture = server.handle_exit

    def handle_exit(sig, frame) -> None:
        app.state.draining = True
        capture(sig, frame)

    server.handle_exit = handle_exit

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started and on_ready is not None:
            on_ready()
        await task

    # uvicorn re-raises the signal it caught once drained, to the handler it found: a no-op here, so
    # the process returns (exit 0) instead of dying of the signal.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        asyncio.run(main())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
