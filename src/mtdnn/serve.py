"""``mtdnn serve``: every task of a trained model behind one HTTP server (FastAPI on uvicorn).

- ``POST /predict``: ``{"task": "rte"}`` or ``{"tasks": ["rte", "sst2"]}``, and ``"inputs"``: a list of
  ``{"text_a": ..., "text_b": ...}``. Answers ``{"results": {task: [answer per input]}}``: ``label`` and
  ``probabilities`` for classification, ``score`` for regression and ranking, the text's entities for
  tagging (``type``, ``start``, ``end``, ``text``, ``score``: as ``mtdnn predict``, long texts
  through overlapping windows), and for span tasks (extractive question answering: ``text_a`` the
  question, ``text_b`` the context) the answer ``text``, its character ``start`` and ``end`` in the
  context and its ``score`` (start + end logit), as ``mtdnn predict`` gives them (a long context is
  cut into windows, decoded together; an empty question or context is answered null).
  Single-sentence and tagging tasks read ``text_a`` only; pair, ranking and span tasks need
  ``text_b``.
- ``GET /tasks`` (each task's type, labels, input kind, head, epoch, encoder, dev metrics, the
  head's ``output`` per row or per token and the kind's ``settings``),
  ``GET /health``, the OpenAPI docs at ``/docs``.

Tasks that take the same input share one encoder pass (in a run trained with ``--adapter lora``:
the tasks with the same adapter; a tagging or span task's windows share the rows that equal
another task's), and concurrent requests are gathered into micro-batches (``MicroBatcher``: up to ``max_batch_size`` inputs per encoder pass, waiting at most
``max_wait_ms`` for more after the first). Bad requests get a 4xx whose ``error`` says what is wrong; the server goes on.
On SIGTERM uvicorn stops accepting connections and lets the requests in flight finish.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError
from .export.engine import Engine, load_engine, present

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """``max_batch_size``: inputs per encoder pass of a micro-batch (1: no batching);
    ``max_wait_ms``: how long the first request of a batch waits for others; ``max_inputs``: inputs per request;
    ``max_text_chars``: characters per text."""

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_inputs: int = 256
    max_text_chars: int = 20_000


def require_serve() -> None:
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"mtdnn serve needs {', '.join(missing)}: pip install 'mtdnn[serve]'")


@dataclass
class _Job:
    kind: str
    text_a: list[str]
    text_b: list[str] | None
    tasks: list[str]
    future: asyncio.Future


class MicroBatcher:
    """Gathers the jobs of concurrent requests and runs them together, one engine call per input
    kind, on one worker thread (the event loop keeps accepting requests meanwhile)."""

    def __init__(self, engine: Engine, max_batch_size: int, max_wait_ms: float) -> None:
        self.engine = engine
        self.max_rows = max(1, max_batch_size)
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.queue: asyncio.Queue[_Job] | None = None
        self.worker: asyncio.Task | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtdnn-infer")
        self.batches = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
        self.pool.shutdown(wait=True)

    async def submit(self, kind: str, text_a: list[str], text_b: list[str] | None,
                     tasks: list[str]) -> dict[str, np.ndarray]:
        assert self.queue is not None, "the batcher is not started"
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(kind, text_a, text_b, tasks, future))
        return await future

    async def _gather(self) -> list[_Job]:
        """The jobs of the next batch: until one input kind has ``max_rows`` rows (an encoder pass
        is full; a request for pair and single-sentence tasks adds a job of each kind) or nothing
        more came within ``max_wait`` of the first."""
        assert self.queue is not None
        jobs = [await self.queue.get()]
        rows = {jobs[0].kind: len(jobs[0].text_a)}
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while max(rows.values()) < self.max_rows:
            if self.queue.empty():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            else:
                job = self.queue.get_nowait()
            jobs.append(job)
            rows[job.kind] = rows.get(job.kind, 0) + len(job.text_a)
        return jobs

    async def _loop(self) -> None:
        while True:
            jobs = await self._gather()
            for kind in dict.fromkeys(j.kind for j in jobs):
                await self._run([j for j in jobs if j.kind == kind])

    async def _run(self, jobs: list[_Job]) -> None:
        tasks = list(dict.fromkeys(t for j in jobs for t in j.tasks))
        text_a = [x for j in jobs for x in j.text_a]
        text_b = [x for j in jobs for x in j.text_b] if jobs[0].text_b is not None else None
        self.batches += 1
        try:
            out = await asyncio.get_running_loop().run_in_executor(self.pool, self.engine.run, text_a, text_b, tasks)
        except Exception as e:  # handed to each waiting request (a 500 there), the loop goes on
            log.exception("inference failed")
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        start = 0
        for j in jobs:
            n = len(j.text_a)
            if not j.future.done():  # a request whose client went away is cancelled
                j.future.set_result({t: out[t][start:start + n] for t in j.tasks})
            start += n


class RequestError(Exception):
    """A bad request: its status code and the one-line message sent back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_request(engine: Engine, options: ServeOptions, task: str | None, tasks: list[str] | None,
                  inputs: list[dict[str, Any]]) -> list[str]:
    """The tasks asked for, or a ``RequestError`` saying what is wrong with the request."""
    if (task is None) == (tasks is None):
        raise RequestError(422, "give either 'task' (one name) or 'tasks' (a list of names)")
    names = [task] if task is not None else list(dict.fromkeys(tasks or []))
    if not names:
        raise RequestError(422, "'tasks' is empty")
    unknown = [n for n in names if n not in engine.tasks]
    if unknown:
        raise RequestError(404, f"unknown task '{unknown[0]}' (known tasks: {', '.join(engine.tasks)})")
    if not inputs:
        raise RequestError(422, "'inputs' is empty: give at least one {\"text_a\": ...}")
    if len(inputs) > options.max_inputs:
        raise RequestError(413, f"too many inputs: {len(inputs)} (at most {options.max_inputs} per request)")
    for i, row in enumerate(inputs):
        for key in ("text_a", "text_b"):
            text = row.get(key)
            if text is not None and len(text) > options.max_text_chars:
                raise RequestError(413, f"inputs[{i}].{key} has {len(text)} characters (at most "
                                        f"{options.max_text_chars})")
    pairs = [n for n in names if engine.tasks[n].takes_pair]
    lacking = next((i for i, row in enumerate(inputs) if row.get("text_b") is None), None)
    if pairs and lacking is not None:
        raise RequestError(422, f"task '{pairs[0]}' takes a pair of texts: inputs[{lacking}] has no text_b")
    return names


async def answer(batcher: MicroBatcher, engine: Engine, names: list[str],
                 inputs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Run the asked tasks (one job per input kind, gathered concurrently) and present the answers."""
    text_a = [row["text_a"] for row in inputs]
    by_kind: dict[str, list[str]] = {}
    for n in names:
        by_kind.setdefault(engine.tasks[n].kind, []).append(n)
    kinds = list(by_kind)
    outs = await asyncio.gather(*(batcher.submit(k, text_a, [row["text_b"] for row in inputs]
                                                 if engine.tasks[by_kind[k][0]].takes_pair else None,
                                                 by_kind[k]) for k in kinds))
    raw = {t: v for out in outs for t, v in out.items()}
    return {n: [present(engine.tasks[n], row) for row in raw[n]] for n in names}


class TextInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text_a: str = Field(description="the text (single-sentence tasks), or the first of a pair")
    text_b: str | None = Field(None, description="the second text (pair and ranking tasks)")


class PredictRequest(BaseModel):
    """The body of ``POST /predict``."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = Field(None, description="one task name (or give 'tasks')")
    tasks: list[str] | None = Field(None, description="several task names, answered from one encoder pass")
    inputs: list[TextInput]


def _validation_message(errors: list[dict[str, Any]]) -> tuple[int, str]:
    """FastAPI's validation errors as one status and one line: malformed JSON is a 400."""
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        where = bad_json.get("loc", ["body", "?"])[-1]
        return 400, f"malformed JSON at character {where}: {bad_json.get('ctx', {}).get('error', bad_json['msg'])}"
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e['msg']}")
    return 422, "; ".join(parts)


def create_app(engine: Engine, options: ServeOptions | None = None):
    """The FastAPI application serving ``engine``'s tasks (see the module docstring)."""
    require_serve()
    from fastapi import FastAPI, Request  # the optional serve extra (require_serve checked it)
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    options = options or ServeOptions()
    batcher = MicroBatcher(engine, options.max_batch_size, options.max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="mtdnn", lifespan=lifespan, summary="Every task of an MT-DNN model from one server.")
    app.state.batcher = batcher

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(list(exc.errors()))
        return JSONResponse({"error": message}, status_code=status)

    @app.post("/predict", summary="Answer one or several tasks for a list of inputs")
    async def predict(req: PredictRequest) -> dict[str, Any]:
        inputs = [row.model_dump() for row in req.inputs]
        names = check_request(engine, options, req.task, req.tasks, inputs)
        return {"results": await answer(batcher, engine, names, inputs)}

    @app.get("/tasks", summary="The tasks: type, labels, input kind, head, epoch, encoder, dev metrics")
    async def tasks() -> dict[str, Any]:
        encoders = sorted({t.encoder for t in engine.tasks.values()})
        return {"encoders": encoders, "tasks": [dict(vars(t)) for t in engine.tasks.values()]}

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "backend": engine.backend, "tasks": len(engine.tasks)}

    return app


def run_server(path: str, host: str = "127.0.0.1", port: int = 8000, backend: str = "torch",
               options: ServeOptions | None = None, epoch: int | None = None, per_task_epochs: bool = False,
               threads: int = 1, device: str = "cpu", graceful_s: int = 30) -> None:
    """Load the model and serve it until SIGINT/SIGTERM (requests in flight finish first)."""
    require_serve()
    import uvicorn  # the optional serve extra (require_serve checked it)

    torch.set_num_threads(max(1, threads))
    engine = load_engine(path, backend=backend, epoch=epoch, per_task_epochs=per_task_epochs,  # type: ignore[arg-type]
                         threads=threads, device=device)
    encoders = sorted({t.encoder for t in engine.tasks.values()})
    log.info("serving %d tasks (%s) with %d encoder(s) (%s) on the %s backend", len(engine.tasks),
             ", ".join(engine.tasks), len(encoders), ", ".join(encoders), engine.backend)
    app = create_app(engine, options)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=graceful_s,
                                  log_level="info", access_log=False)).run()
