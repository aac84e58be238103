"""`isa sweep run|status|collect` and `isa select`: sweeps from a TOML spec (isa_core.sweeps)."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from isa_cli.app import app
from isa_cli.progress import DEFAULT_EVERY, ProgressEvery, progress_bar
from isa_core.errors import IsaError
from isa_core.locks import folder_lock
from isa_core.sweeps import (
    ExecutorKind,
    Run,
    RunResult,
    SweepSpec,
    check_data,
    filter_runs,
    load_manifest,
    load_spec,
    read_results,
    run_folder,
    run_state,
    select_representatives,
    write_manifest,
)

sweep_app = typer.Typer(help="Sweeps: grids of train -> encode -> mig runs.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


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


@sweep_app.command("run")
def run_command(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (TOML).", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Sweep folder.")] = Path("sweeps"),
    executor: Annotated[
        ExecutorKind,
        typer.Option(
            help="local (this machine), slurm (a job array through submitit), or "
            "submitit-local (the submitit path on this machine, to test a sweep)."
        ),
    ] = ExecutorKind.local,
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
    progress_every: ProgressEvery = DEFAULT_EVERY,
) -> None:
    """Run every run of SPEC (skip finished, resume interrupted, record failures).

    Exit status: 0 when every run is done; 2 when a run failed (its log.txt is named) or on
    bad input; 130/143 after SIGINT/SIGTERM, which is passed on to the running runs (they
    checkpoint; the same command resumes them). Only one `sweep run` works in OUT/NAME at a
    time."""
    sweep = load_spec(spec)
    runs = filter_runs(sweep.runs(), only or [])
    if executor != ExecutorKind.slurm:  # a cluster's nodes may see paths this machine does not
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
        write_manifest(folder, sweep)
        todo = [r for r in runs if run_state(folders[r.id])["state"] != "done"]
        for run in runs:
            if run not in todo:
                typer.echo(json.dumps({"id": run.id, "state": "done", "skipped": True}))
        if executor == ExecutorKind.local:
            records = _run_locally(todo, jobs, folder, sweep, progress_every)
        else:
            parameters = slurm_parameters(
                slurm_partition,
                slurm_time,
                slurm_gpus_per_task,
                slurm_cpus_per_task,
                slurm_mem,
                slurm_array_parallelism,
                slurm_account,
                slurm_extra or [],
            )
            records = _submit(executor, folder, todo, sweep, parameters)
    _check_failures(records, folders)


def _run_locally(
    todo: list[Run], jobs: int, folder: Path, sweep: SweepSpec, every: float
) -> list[dict]:
    """The runs in worker processes on this machine; a SIGINT/SIGTERM is passed on to them and
    ends the command with 130/143 once they have checkpointed."""
    from isa_core.sweeps import LocalPool, gpu_names

    pool = LocalPool(jobs, gpu_names() if todo else [])
    with _passed_on(pool.stop):
        records = _report(pool.run(todo, folder, sweep.eval), sweep.name, len(todo), every)
    if pool.signal is not None:
        stopped = sum(r.get("state") in ("interrupted", "pending") for r in records)
        name = signal.Signals(pool.signal).name
        sys.stderr.write(
            f"isa sweep run: stopped by {name}; {stopped} run(s) left unfinished (interrupted "
            "runs keep their last checkpoint); run the same command again to resume them\n"
        )
        raise typer.Exit(143 if pool.signal == signal.SIGTERM else 130)
    return records


@contextmanager
def _passed_on(handler: Callable[[int, object], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` for the body (instead of ending this process)."""
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def _submit(
    kind: ExecutorKind, folder: Path, todo: list[Run], sweep: SweepSpec, parameters: dict
) -> list[dict]:
    """The runs as a submitit job array: on Slurm, print the submitted jobs and return; with
    submitit-local, wait for them and print their records."""
    from isa_core.sweeps import submit

    if not todo:
        return []
    submitted = submit(kind, folder, todo, sweep, parameters)
    if kind == ExecutorKind.slurm:
        for run, job in zip(todo, submitted, strict=True):
            typer.echo(json.dumps({"id": run.id, "state": "submitted", "job_id": job.job_id}))
        return []
    records = [job.result() for job in submitted]
    for record in records:
        typer.echo(json.dumps(record))
    return records


def _report(records: Iterable[dict], name: str, total: int, every: float) -> list[dict]:
    """Print each run's record as it finishes, with a progress bar on a terminal, or else a
    line every ``every`` seconds (its time left appears once the first run has finished)."""
    done: list[dict] = []
    failed = 0
    runs = {"noun": "runs", "unit": "runs/h", "scale": 3600.0}
    with progress_bar(f"sweep {name}", total=total, every=every, **runs) as bar:
        for record in records:
            done.append(record)
            failed += record.get("state") == "failed"
            typer.echo(json.dumps(record))
            sys.stdout.flush()
            bar.update(advance=1, detail=f"{failed} failed")
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
    from isa_core import io

    rows = []
    for entry in load_manifest(folder):
        run_dir = run_folder(folder, entry["id"])
        if run_state(run_dir)["state"] == "done":
            rows.append(RunResult.from_run_folder(entry, run_dir).as_row())
    io.write_text(
        "".join(json.dumps(r) + "\n" for r in rows), out, typer.get_binary_stream("stdout")
    )
    if out is not None and str(out) != "-":
        typer.echo(str(out))  # like every command that writes a file, print its path


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
    keys = [k.strip() for k in by.split(",") if k.strip()]
    for row in select_representatives(read_results(results), keys, quantile, str(results)):
        typer.echo(json.dumps(row))
