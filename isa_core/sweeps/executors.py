"""Where a sweep's runs execute: worker processes on this machine, or a job array through
submitit (Slurm, or submitit's local stand-in to try a sweep out).

Locally, each worker process runs one run at a time with an equal share of the CPU cores as
torch's intra-op threads, so that concurrent runs never oversubscribe the machine (three
2-thread runs on 2 cores each ran about 10x slower than one alone), and, on a machine with
GPUs, sees one GPU of its own (``CUDA_VISIBLE_DEVICES``, set before torch starts CUDA there).
A signal passed to the pool (:meth:`LocalPool.stop`) reaches every worker: a running run
checkpoints and stops at its next step, and no new run starts.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from isa_core.choices import ExecutorKind
from isa_core.devices import cpu_cores
from isa_core.errors import IsaError, field_error
from isa_core.sweeps.execute import execute_run
from isa_core.sweeps.spec import Run, SweepSpec, run_folder

__all__ = [
    "ExecutorKind",
    "LocalPool",
    "cpu_cores",
    "gpu_names",
    "submit",
    "threads_per_run",
]

JOBS_FILE = "jobs.jsonl"
POLL_SECONDS = 1.0  # how often the pool looks for workers that died without a word

Work = Callable[[Run, Path, dict[str, Any], threading.Event], dict[str, Any]]


def threads_per_run(jobs: int, cores: int | None = None) -> int:
    """Intra-op threads for each of ``jobs`` concurrent CPU runs: an equal share of the cores,
    at least one."""
    if jobs < 1:
        raise field_error("jobs", f"must be >= 1, got {jobs}")
    return max(1, (cpu_cores() if cores is None else cores) // jobs)


def gpu_names() -> list[str]:
    """The GPUs this process sees, as ``CUDA_VISIBLE_DEVICES`` entries for its workers."""
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [name.strip() for name in visible.split(",") if name.strip()][:count]
    return [str(index) for index in range(count)]


class LocalPool:
    """Runs on this machine, ``jobs`` at a time in worker processes; with GPUs, at most one
    run per GPU at a time. ``work`` runs one run in a worker (:func:`execute_run`).

    Workers are started with multiprocessing's spawn, so a script that uses the pool must
    guard its main code with ``if __name__ == "__main__":``, as spawn asks.
    """

    def __init__(
        self,
        jobs: int,
        gpus: list[str] | None = None,
        work: Work = execute_run,
        cores: int | None = None,
    ) -> None:
        self.gpus = list(gpus or [])
        self.width = min(jobs, len(self.gpus)) if self.gpus else jobs
        self.threads = threads_per_run(self.width, cores)
        self.work = work
        self.signal: int | None = None  # the first signal passed on, if any
        self._workers: list[multiprocessing.process.BaseProcess] = []

    def stop(self, number: int, _frame: object = None) -> None:
        """Pass signal ``number`` on to every worker (usable as a signal handler): running runs
        checkpoint and stop, and no run starts after it."""
        if self.signal is None:
            self.signal = number
        for worker in self._workers:
            if worker.pid is not None and worker.exitcode is None:
                with contextlib.suppress(ProcessLookupError):  # it has just ended
                    os.kill(worker.pid, number)

    def run(self, todo: list[Run], folder: Path, evaluation: dict[str, Any]) -> Iterator[dict]:
        """Each run's record, in the order of ``todo``, as soon as it and those before it are
        done; runs a stop left unstarted are ``pending``."""
        if not todo:
            return
        if self.signal is not None:
            yield from ({"id": run.id, "state": "pending"} for run in todo)
            return
        # spawn: a fresh interpreter per worker, so its GPU and threads are set before torch
        context = multiprocessing.get_context("spawn")
        tasks, results = context.Queue(), context.Queue()
        tasks.cancel_join_thread()  # tasks no worker took must not hold this process at exit
        for index, run in enumerate(todo):
            tasks.put((index, run, run_folder(folder, run.id)))
        width = min(self.width, len(todo))
        for _ in range(width):
            tasks.put(None)
        # the index of the run each worker is on (-1: none), in shared memory, so that it is
        # known even when a worker dies before it could send a word
        running = context.Array("q", [-1] * width, lock=False)
        self._workers = [
            context.Process(
                target=_worker,
                args=(
                    slot,
                    self.gpus[slot] if self.gpus else None,
                    self.threads,
                    self.work,
                    evaluation,
                    tasks,
                    results,
                    running,
                ),
                name=f"isa-sweep-worker-{slot}",
            )
            for slot in range(width)
        ]
        records: dict[int, dict] = {}
        done = 0
        try:
            for worker in self._workers:
                worker.start()
            if self.signal is not None:  # it came while the workers were starting
                self.stop(self.signal)
            while done < len(todo):
                try:
                    index, record = results.get(timeout=POLL_SECONDS)
                    records[index] = record
                except queue.Empty:
                    self._settle_lost(todo[done:], done, results, running, records)
                while done in records:
                    yield records.pop(done)
                    done += 1
        finally:
            self._finish(done < len(todo))

    def _settle_lost(
        self,
        left: list[Run],
        first: int,
        results: multiprocessing.Queue,
        running: Any,
        records: dict[int, dict],
    ) -> None:
        """Records for the runs of workers that ended without reporting (killed, crashed), and
        for the runs left unstarted once no worker is left; ``left`` are the runs from index
        ``first`` on, not yet handed to the caller."""
        ended = {slot for slot, worker in enumerate(self._workers) if worker.exitcode is not None}
        if not ended:
            return
        # What an ended worker sent is in the queue by now; read it before judging its runs.
        while True:
            try:
                index, record = results.get_nowait()
            except queue.Empty:
                break
            records[index] = record
        for slot in ended:
            index, running[slot] = running[slot], -1
            if index < first or index in records:  # none, handed over, or reported
                continue
            run_id = left[index - first].id
            if self.signal is not None:
                records[index] = {"id": run_id, "state": "interrupted"}
            else:
                error = f"its worker process ended with exit status {self._workers[slot].exitcode}"
                records[index] = {"id": run_id, "state": "failed", "error": error}
        if len(ended) == len(self._workers):
            for index, run in enumerate(left, first):
                if index in records:
                    continue
                if self.signal is not None:
                    records[index] = {"id": run.id, "state": "pending"}
                else:
                    error = "no worker process was left to run it"
                    records[index] = {"id": run.id, "state": "failed", "error": error}

    def _finish(self, early: bool) -> None:
        """Wait for the workers; stop them first when the caller left before the last run."""
        if early:
            self.stop(signal.SIGTERM)
        for worker in self._workers:
            if worker.pid is not None:  # started
                worker.join()
        self._workers = []


def _worker(
    slot: int,
    gpu: str | None,
    threads: int,
    work: Work,
    evaluation: dict[str, Any],
    tasks: multiprocessing.Queue,
    results: multiprocessing.Queue,
    running: Any,
) -> None:
    """A worker process: its signals set the stop event of the run it is on; it sees ``gpu``
    only and uses ``threads`` intra-op threads; it runs tasks until the queue's end mark."""
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda _number, _frame: stop.set())
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before torch initialises CUDA here
    import torch

    torch.set_num_threads(threads)
    while (task := tasks.get()) is not None:
        index, run, folder = task
        running[slot] = index
        try:
            record = work(run, folder, evaluation, stop)
        except Exception as error:  # work records its own failures; this is a last resort
            record = {"id": run.id, "state": "failed", "error": f"{type(error).__name__}: {error}"}
        results.put((index, record))


def submit(
    kind: ExecutorKind, folder: Path, todo: list[Run], spec: SweepSpec, parameters: dict
) -> list:
    """Submit ``todo`` as one job array through submitit (``parameters``: its Slurm settings,
    ``time`` in minutes); records each job in ``FOLDER/jobs.jsonl``; the submitit jobs."""
    import submitit

    log_folder = folder / "submitit" / "%j"
    if kind == ExecutorKind.slurm:
        if shutil.which("srun") is None:
            raise IsaError(
                "no Slurm here (srun not found); use the local or submitit-local executor"
            )
        executor = submitit.SlurmExecutor(folder=log_folder)
        executor.update_parameters(job_name=f"isa-{spec.name}", **parameters)
    else:
        executor = submitit.LocalExecutor(folder=log_folder)
        executor.update_parameters(timeout_min=parameters["time"])
    folders = [run_folder(folder, run.id) for run in todo]
    jobs = executor.map_array(execute_run, todo, folders, [spec.eval] * len(todo))
    with (folder / JOBS_FILE).open("a") as handle:
        for run, job in zip(todo, jobs, strict=True):
            handle.write(json.dumps({"id": run.id, "job_id": str(job.job_id)}) + "\n")
    return jobs
