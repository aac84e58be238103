"""`isa sweep run|status|collect`: a grid of runs from a TOML spec, on this machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from isa_cli.app import app
from isa_core import io
from isa_core.errors import IsaError
from isa_core.sweeps import Run, SweepSpec, load_spec, run_state

sweep_app = typer.Typer(help="Sweeps: grids of train -> encode -> mig runs.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


def _isa() -> str:
    """This interpreter's `isa` script, so runs use the same installation."""
    candidate = Path(sysconfig.get_path("scripts")) / "isa"
    return str(candidate) if candidate.exists() else (shutil.which("isa") or "isa")


def _select(runs: list[Run], only: list[str]) -> list[Run]:
    for item in only:
        key, sep, value = item.partition("=")
        if not sep:
            raise IsaError(f"--only {item!r}: write KEY=VALUE, e.g. method=isa-vae")
        key = key.replace("-", "_")
        runs = [r for r in runs if key in r.grid and str(r.grid[key]) == value]
    return runs


def _execute(run: Run, folder: Path, spec: SweepSpec, env: dict | None = None) -> dict:
    """train (or resume) -> encode -> mig for one run; failures land in error.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    resume = (folder / "model.safetensors").exists() and (
        folder / "train_state.safetensors"
    ).exists()
    train = [_isa(), *run.train_args(folder), "-q"]
    train.append("--resume" if resume else "--force")
    if resume:  # a resumed run keeps its stored config; only the length may be extended
        train = [_isa(), "train", "-o", str(folder), "--resume", "-q"]
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
            done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
            handle.write(done.stderr)
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                message = lines[-1] if lines else f"exit status {done.returncode}"
                (folder / "error.txt").write_text(message + "\n")
                return {"id": run.id, "state": "failed", "error": message}
            last_stdout = done.stdout
    result = json.loads(last_stdout.strip().splitlines()[-1])
    result.update(id=run.id, method=run.method, grid=run.grid, seconds=time.perf_counter() - start)
    with io.atomic_write(folder / "result.json") as handle:
        handle.write(json.dumps(result).encode())
    return {"id": run.id, "state": "done", "mig": result["mig"], "logpx": result.get("logpx")}


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
    folders = [folder / "runs" / r.id for r in todo]
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
        bool, typer.Option(help="Print the runs (JSON lines); start nothing.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option(help="Keep runs whose grid has KEY=VALUE (repeatable).")
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
    """Run every run of SPEC (skip finished, resume interrupted, record failures)."""
    sweep = load_spec(spec)
    runs = _select(sweep.runs(), only or [])
    if dry_run:
        for run in runs:
            typer.echo(json.dumps({"id": run.id, "method": run.method, "flags": run.flags}))
        return
    folder = out / sweep.name
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    manifest = [
        {"id": r.id, "method": r.method, "grid": r.grid, "flags": r.flags} for r in sweep.runs()
    ]
    with io.atomic_write(folder / "sweep.json") as handle:
        handle.write(json.dumps({"name": sweep.name, "runs": manifest}).encode())
    todo = [r for r in runs if run_state(folder / "runs" / r.id)["state"] != "done"]
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
                typer.echo(json.dumps({"id": run.id, "state": "submitted", "job_id": job.job_id}))
            return
        for job in submitted:
            typer.echo(json.dumps(job.result()))
        return
    import torch

    records = run_locally(todo, jobs, torch.cuda.device_count(), folder, sweep)
    if not sys.stderr.isatty():
        for record in records:
            typer.echo(json.dumps(record))
            sys.stdout.flush()
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn(f"[bold]sweep {sweep.name}[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} done, {task.fields[failed]} failed"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("sweep", total=len(todo), failed=0)
        failed = 0
        for record in records:
            failed += record.get("state") == "failed"
            progress.update(task, advance=1, failed=failed)
            typer.echo(json.dumps(record))
            sys.stdout.flush()


def run_locally(todo: list[Run], jobs: int, gpus: int, folder: Path, sweep: SweepSpec, work=None):
    """Run ``todo`` with ``jobs`` at a time; with GPUs, one run per GPU at a time, each run
    seeing only its GPU (CUDA_VISIBLE_DEVICES). Yields each run's record in order."""
    import os
    import queue

    work = work or _execute
    slots: queue.Queue = queue.Queue()
    width = min(jobs, gpus) if gpus else jobs
    for slot in range(width):
        slots.put(slot)

    def one(run: Run) -> dict:
        slot = slots.get()
        try:
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(slot)) if gpus else None
            return work(run, folder / "runs" / run.id, sweep, env)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(width) as pool:
        yield from pool.map(one, todo)


def _manifest(folder: Path) -> list[dict]:
    path = folder / "sweep.json"
    if not path.exists():
        raise IsaError(f"{folder} is not a sweep folder (no sweep.json); run `isa sweep run` first")
    return json.loads(path.read_text())["runs"]


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
    for entry in _manifest(folder):
        state = run_state(folder / "runs" / entry["id"])
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
    for entry in _manifest(folder):
        run_dir = folder / "runs" / entry["id"]
        if run_state(run_dir)["state"] != "done":
            continue
        result = json.loads((run_dir / "result.json").read_text())
        model_meta = io.load_bundle(run_dir / "model.safetensors").metadata
        metrics = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        rows.append(
            {
                "id": entry["id"],
                "method": entry["method"],
                **entry["grid"],
                "config": model_meta["config"],
                "mig": result["mig"],
                "logpx": result.get("logpx"),
                "gaps": {f["name"]: f["gap"] for f in result["factors"]},
                "exponents": metrics[-1].get("exponents") if metrics else None,
                "seconds": result.get("seconds"),
                "images_per_s": metrics[-1].get("images_per_s") if metrics else None,
                "model": str((run_dir / "model.safetensors").resolve()),
                "codes": str((run_dir / "codes.safetensors").resolve()),
            }
        )
    io.write_text(
        "".join(json.dumps(r) + "\n" for r in rows), out, typer.get_binary_stream("stdout")
    )


def read_results(path: Path) -> list[dict]:
    """Rows of a results JSONL file (`isa sweep collect`)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise IsaError(
            f"{path}: no such results file; write one with `isa sweep collect`"
        ) from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise IsaError(f"{path}:{number} is not a JSON line") from None
    if not rows:
        raise IsaError(f"{path} holds no results")
    return rows


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
    for row in select_representatives(read_results(results), keys, quantile):
        typer.echo(json.dumps(row))
