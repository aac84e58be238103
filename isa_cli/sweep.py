"""`isa sweep run|status|collect`: a grid of runs from a TOML spec, on this machine."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from isa_cli.app import app
from isa_core.errors import IsaError
from isa_core.locks import folder_lock
from isa_core.sweeps import (
    Run,
    SweepSpec,
    check_data,
    check_result_rows,
    filter_runs,
    load_manifest,
    load_spec,
    run_folder,
    run_state,
    threads_per_run,
)

sweep_app = typer.Typer(help="Sweeps: grids of train -> encode -> mig runs.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


def _isa() -> str:
    """This interpreter's `isa` script, so runs use the same installation."""
    candidate = Path(sysconfig.get_path("scripts")) / "isa"
    return str(candidate) if candidate.exists() else (shutil.which("isa") or "isa")


class _Children:
    """The stage processes running now, so a signal to the sweep is passed on to them."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._running: set[subprocess.Popen] = set()
        self.signal: int | None = None

    def start(self, command: list[str], env: dict | None) -> subprocess.Popen | None:
        """Start ``command``, or nothing (None) once the sweep has been told to stop."""
        with self._lock:
            if self.signal is not None:
                return None
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                encoding="utf-8",
                errors="replace",
            )
            self._running.add(process)
            return process

    def finished(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)

    def stop(self, number: int, _frame: object = None) -> None:
        """Signal handler: remember the first signal and forward it to every running child
        (`isa train` checkpoints and exits); no new stage starts after it."""
        with self._lock:
            if self.signal is None:
                self.signal = number
            for process in self._running:
                process.send_signal(number)


CHILDREN = _Children()


def _stage(command: list[str], env: dict | None) -> tuple[int | None, str, str]:
    """Run one stage; its exit status (None when the sweep was stopped first), stdout, stderr."""
    process = CHILDREN.start(command, env)
    if process is None:
        return None, "", ""
    try:
        stdout, stderr = process.communicate()
    finally:
        CHILDREN.finished(process)
    return process.returncode, stdout, stderr


def _execute(run: Run, folder: Path, spec: SweepSpec, env: dict | None = None) -> dict:
    """train (or resume) -> encode -> mig for one run; failures land in error.txt."""
    if CHILDREN.signal is not None:
        return {"id": run.id, "state": "pending"}
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return {"id": run.id, "state": "failed", "error": f"cannot create {folder}: {error}"}
    log = folder / "log.txt"
    # The state file alone is a complete checkpoint (it carries the weights too).
    resume = (folder / "train_state.safetensors").exists()
    train = [_isa(), *run.train_args(folder), "-q"]
    train.append("--resume" if resume else "--force")
    if resume:  # a resumed run keeps its stored config; only the length may be extended
        train = [_isa(), "train", "-o", str(folder), "--resume", "-q"]
    if env is not None and "OMP_NUM_THREADS" in env:  # the run's share of the cores
        train += ["--threads", env["OMP_NUM_THREADS"]]
    eval_args = []
    for name, value in spec.eval.items():
        eval_args += [f"--{name.replace('_', '-')}", str(value)]
    stages = [
        train,
        [
            _isa(),
            "encode",
            str(folder / "model.safetensors"),
            "-o",
            str(folder / "codes.safetensors"),
            "-q",
        ],
        [_isa(), "mig", str(folder / "codes.safetensors"), "-q", *eval_args],
    ]
    start = time.perf_counter()
    (folder / "error.txt").unlink(missing_ok=True)
    with log.open("a") as handle:
        for command in stages:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            code, last_stdout, stderr = _stage(command, env)
            handle.write(stderr)
            if code != 0 and CHILDREN.signal is not None:
                # stopped by a signal: no error.txt, so the next `sweep run` resumes the run
                handle.write(f"(stopped by signal {CHILDREN.signal})\n")
                return {"id": run.id, "state": "interrupted"}
            if code != 0:
                lines = [line for line in stderr.splitlines() if line.strip()]
                message = lines[-1] if lines else f"exit status {code}"
                (folder / "error.txt").write_text(message + "\n")
                return {"id": run.id, "state": "failed", "error": message}
    try:
        result = json.loads(last_stdout.strip().splitlines()[-1])
        result.update(
            id=run.id, method=run.method, grid=run.grid, seconds=time.perf_counter() - start
        )
    except (IndexError, ValueError, AttributeError):
        message = "isa mig printed no result line"
        (folder / "error.txt").write_text(message + "\n")
        return {"id": run.id, "state": "failed", "error": message}
    from isa_core import io

    with io.atomic_write(folder / "result.json") as handle:
        handle.write(json.dumps(result).encode())
    return {"id": run.id, "state": "done", "mig": result.get("mig"), "logpx": result.get("logpx")}


class Executor(str, Enum):
    local = "local"
    slurm = "slurm"
    submitit_local = "submitit-local"


def slurm_parameters(
    partition: str | None,
    time_min: int,
    gpus_per_task: int | None,
    cpus_per_task: int | None,
    mem: str | None,
    array_parallelism: int,
    account: str | None,
    extra: list[str],
) -> dict:
    """submitit SlurmExecutor parameters from the --slurm-* flags."""
    additional = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise IsaError(f"--slurm-extra {item!r}: write KEY=VALUE, e.g. constraint=a100")
        additional[key.strip().replace("-", "_")] = value
    params: dict = {"time": time_min, "array_parallelism": array_parallelism}
    optional = (
        ("partition", partition),
        ("gpus_per_task", gpus_per_task),
        ("cpus_per_task", cpus_per_task),
        ("mem", mem),
        ("account", account),
    )
    params.update({key: value for key, value in optional if value is not None})
    if additional:
        params["additional_parameters"] = additional
    return params


def _submit(kind: Executor, folder: Path, todo: list[Run], sweep: SweepSpec, params: dict):
    """Submit the runs as one job array through submitit; append to OUT/NAME/jobs.jsonl."""
    import submitit

    log_folder = folder / "submitit" / "%j"
    if kind == Executor.slurm:
        if shutil.which("srun") is None:
            raise IsaError("no Slurm here (srun not found); use --executor local or submitit-local")
        executor = submitit.SlurmExecutor(folder=log_folder)
        executor.update_parameters(job_name=f"isa-{sweep.name}", **params)
    else:
        executor = submitit.LocalExecutor(folder=log_folder)
        executor.update_parameters(timeout_min=params["time"])
    folders = [run_folder(folder, r.id) for r in todo]
    jobs = executor.map_array(_execute, todo, folders, [sweep] * len(todo))
    with (folder / "jobs.jsonl").open("a") as handle:
        for run, job in zip(todo, jobs, strict=True):
            handle.write(json.dumps({"id": run.id, "job_id": str(job.job_id)}) + "\n")
    return jobs


@sweep_app.command("run")
def run_command(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (TOML).", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Sweep folder.")] = Path("sweeps"),
    executor: Annotated[
        Executor,
        typer.Option(
            help="local (this machine), slurm (a job array through submitit), or "
            "submitit-local (the submitit path on this machine, to test a sweep)."
        ),
    ] = Executor.local,
    jobs: Annotated[int, typer.Option(min=1, help="local: runs at a time on this machine.")] = 1,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Check the spec and its data, print the runs (JSON lines); start nothing."
        ),
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Keep runs whose grid has KEY=VALUE (repeatable); numbers compare by value "
            "(beta=1 matches 1.0)."
        ),
    ] = None,
    slurm_partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    slurm_time: Annotated[int, typer.Option(help="Time limit per run, minutes.")] = 240,
    slurm_gpus_per_task: Annotated[int | None, typer.Option(help="GPUs per run.")] = None,
    slurm_cpus_per_task: Annotated[int | None, typer.Option(help="CPUs per run.")] = None,
    slurm_mem: Annotated[str | None, typer.Option(help="Memory per run, e.g. 32G.")] = None,
    slurm_array_parallelism: Annotated[int, typer.Option(help="Runs at once.")] = 64,
    slurm_account: Annotated[str | None, typer.Option(help="Slurm account.")] = None,
    slurm_extra: Annotated[
        list[str] | None, typer.Option(help="Any other sbatch option, KEY=VALUE (repeatable).")
    ] = None,
) -> None:
    """Run every run of SPEC (skip finished, resume interrupted, record failures).

    Exit status: 0 when every run is done; 2 when a run failed (its log.txt is named) or on
    bad input; 130/143 after SIGINT/SIGTERM, which is passed on to the running runs (they
    checkpoint; the same command resumes them). Only one `sweep run` works in OUT/NAME at a
    time."""
    sweep = load_spec(spec)
    runs = filter_runs(sweep.runs(), only or [])
    if executor != Executor.slurm:  # a cluster's nodes may see paths this machine does not
        check_data(runs)
    if dry_run:
        for run in runs:
            typer.echo(json.dumps({"id": run.id, "method": run.method, "flags": run.flags}))
        return
    folder = out / sweep.name
    folders = {r.id: run_folder(folder, r.id) for r in sweep.runs()}
    try:
        (folder / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise IsaError(
            f"cannot create the sweep folder {folder} ({error.strerror}); give -o/--out a "
            "folder you can write"
        ) from None
    with folder_lock(folder, f"isa sweep run {spec}"):
        manifest = [
            {"id": r.id, "method": r.method, "grid": r.grid, "flags": r.flags} for r in sweep.runs()
        ]
        from isa_core import io

        with io.atomic_write(folder / "sweep.json") as handle:
            handle.write(json.dumps({"name": sweep.name, "runs": manifest}).encode())
        todo = [r for r in runs if run_state(folders[r.id])["state"] != "done"]
        for run in runs:
            if run not in todo:
                typer.echo(json.dumps({"id": run.id, "state": "done", "skipped": True}))
        if executor != Executor.local:
            params = slurm_parameters(
                slurm_partition,
                slurm_time,
                slurm_gpus_per_task,
                slurm_cpus_per_task,
                slurm_mem,
                slurm_array_parallelism,
                slurm_account,
                slurm_extra or [],
            )
            if not todo:
                return
            submitted = _submit(executor, folder, todo, sweep, params)
            if executor == Executor.slurm:
                for run, job in zip(todo, submitted, strict=True):
                    record = {"id": run.id, "state": "submitted", "job_id": job.job_id}
                    typer.echo(json.dumps(record))
                return
            records = [job.result() for job in submitted]
            for record in records:
                typer.echo(json.dumps(record))
            _check_failures(records, folders)
            return
        import torch

        gpus = torch.cuda.device_count()
        CHILDREN.signal = None
        handlers = {s: signal.signal(s, CHILDREN.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            records = _report(run_locally(todo, jobs, gpus, folder, sweep), sweep, len(todo))
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
    if CHILDREN.signal is not None:
        stopped = sum(r.get("state") in ("interrupted", "pending") for r in records)
        name = signal.Signals(CHILDREN.signal).name
        sys.stderr.write(
            f"isa sweep run: stopped by {name}; {stopped} run(s) left unfinished (interrupted "
            "runs keep their last checkpoint); run the same command again to resume them\n"
        )
        raise typer.Exit(143 if CHILDREN.signal == signal.SIGTERM else 130)
    _check_failures(records, folders)


def _report(records, sweep: SweepSpec, total: int) -> list[dict]:
    """Print each run's record as it finishes (with a progress bar on a terminal)."""
    done = []
    if not sys.stderr.isatty():
        for record in records:
            typer.echo(json.dumps(record))
            sys.stdout.flush()
            done.append(record)
        return done
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn(f"[bold]sweep {sweep.name}[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} done, {task.fields[failed]} failed"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("sweep", total=total, failed=0)
        failed = 0
        for record in records:
            failed += record.get("state") == "failed"
            progress.update(task, advance=1, failed=failed)
            typer.echo(json.dumps(record))
            sys.stdout.flush()
            done.append(record)
    return done


def _check_failures(records: list[dict], folders: dict[str, Path]) -> None:
    """Refuse (exit 2) when a run failed, naming how many and where their logs are."""
    failed = [r["id"] for r in records if r.get("state") == "failed"]
    if not failed:
        return
    logs = [str(folders[run_id] / "log.txt") for run_id in failed[:3]]
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    raise IsaError(
        f"{len(failed)} of {len(records)} runs failed; see {', '.join(logs)}{more} "
        "(or `isa sweep status`); fix the cause and run the same command again"
    )


def run_locally(todo: list[Run], jobs: int, gpus: int, folder: Path, sweep: SweepSpec, work=None):
    """Run ``todo`` with ``jobs`` at a time; with GPUs, one run per GPU at a time, each run
    seeing only its GPU (CUDA_VISIBLE_DEVICES). Each run gets an equal share of the CPU cores
    as its intra-op threads (``--threads`` and OMP_NUM_THREADS), so runs never oversubscribe
    the machine. Yields each run's record in order."""
    import os
    import queue

    work = work or _execute
    slots: queue.Queue = queue.Queue()
    width = min(jobs, gpus) if gpus else jobs
    threads = str(threads_per_run(width))
    for slot in range(width):
        slots.put(slot)

    def one(run: Run) -> dict:
        slot = slots.get()
        try:
            env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(slot)
            return work(run, run_folder(folder, run.id), sweep, env)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(width) as pool:
        yield from pool.map(one, todo)


@sweep_app.command("status")
def status_command(
    folder: Annotated[Path, typer.Argument(help="Sweep folder (OUT/NAME).", show_default=False)],
) -> None:
    """One JSON line per run: id, state (pending/running/done/failed), step, last loss, error;
    a table on stderr."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {folder}")
    for column in ("run", "state", "step", "loss", "error"):
        table.add_column(column)
    for entry in load_manifest(folder):
        state = run_state(run_folder(folder, entry["id"]))
        typer.echo(json.dumps({"id": entry["id"], **state}))
        loss = state.get("loss")
        table.add_row(
            entry["id"],
            state["state"],
            str(state["step"]),
            "" if loss is None else f"{loss:.2f}",
            state.get("error", ""),
        )
    Console(stderr=True).print(table)


@sweep_app.command("collect")
def collect_command(
    folder: Annotated[Path, typer.Argument(help="Sweep folder (OUT/NAME).", show_default=False)],
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="JSONL file.", show_default="stdout")
    ] = None,
) -> None:
    """One JSON line per finished run: grid values, config, MIG, per-factor gaps, logpx, paths."""
    rows = []
    for entry in load_manifest(folder):
        run_dir = run_folder(folder, entry["id"])
        if run_state(run_dir)["state"] == "done":
            rows.append(_collected(entry, run_dir))
    from isa_core import io

    io.write_text(
        "".join(json.dumps(r) + "\n" for r in rows), out, typer.get_binary_stream("stdout")
    )
    if out is not None and str(out) != "-":
        typer.echo(str(out))  # like every command that writes a file, print its path


def _collected(entry: dict, run_dir: Path) -> dict:
    """The results row of one finished run; a file isa did not write is refused in one line."""
    path = run_dir / "result.json"
    redo = f"delete {path} and run the sweep again to redo the run"
    try:
        result = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        raise IsaError(f"{path} is not readable JSON; {redo}") from None
    factors = result.get("factors") if isinstance(result, dict) else None
    if (
        not isinstance(factors, list)
        or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in factors)
        or "mig" not in result
    ):
        raise IsaError(f"{path} is not a result of `isa sweep run`; {redo}")
    from isa_core import io

    model = run_dir / "model.safetensors"
    config = io.load_bundle(model).metadata.get("config")
    if not isinstance(config, dict):
        raise IsaError(f"{model} has no run config; it was not written by isa train; {redo}")
    config = dict(config)
    if isinstance(config.get("steps"), int) and config["steps"] > 0:
        config["epochs"] = None  # a run given --steps (older files stored the default 20.0)
    last = _last_metrics(run_dir / "metrics.jsonl")
    return {
        "id": entry["id"],
        "method": entry["method"],
        # β groups the rows (select, plot), also when it is fixed in [base], not in the grid.
        "beta": config.get("beta"),
        **entry["grid"],
        "config": config,
        "mig": result["mig"],
        "logpx": result.get("logpx"),
        "gaps": {f["name"]: f.get("gap") for f in factors},
        "exponents": last.get("exponents"),
        "seconds": result.get("seconds"),
        "images_per_s": last.get("images_per_s"),
        "model": str(model.resolve()),
        "codes": str((run_dir / "codes.safetensors").resolve()),
    }


def _last_metrics(path: Path) -> dict:
    """The last readable line of a metrics.jsonl ({} when there is none)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            return record
    return {}


def read_results(path: Path, require: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a results JSONL file (`isa sweep collect`), checked; ``require`` names the keys
    every row must have."""
    hint = "give the results file (JSON lines) of `isa sweep collect`"
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise IsaError(
            f"{path}: no such results file; write one with `isa sweep collect`"
        ) from None
    except IsADirectoryError:
        raise IsaError(f"{path} is a folder; {hint}") from None
    except UnicodeDecodeError:
        raise IsaError(f"{path} is not text (binary data?); {hint}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError):
            raise IsaError(f"{path}:{number} is not a JSON line; {hint}") from None
    if not rows:
        raise IsaError(f"{path} holds no results; {hint} from a sweep with finished runs")
    return check_result_rows(rows, str(path), require)


@app.command("select")
def select_command(
    results: Annotated[
        Path, typer.Argument(help="Results JSONL (isa sweep collect).", show_default=False)
    ],
    by: Annotated[str, typer.Option(help="Group runs by these keys.")] = "method,beta",
    quantile: Annotated[
        float, typer.Option(help="Keep runs with MIG at or above this quantile.")
    ] = 0.5,
) -> None:
    """The representative model per group (appendix A.5): one JSON line per group."""
    from isa_core.sweeps import select_representatives

    keys = [k.strip() for k in by.split(",") if k.strip()]
    for row in select_representatives(read_results(results), keys, quantile, str(results)):
        typer.echo(json.dumps(row))
