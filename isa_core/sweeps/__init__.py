"""Sweeps: the paper's experiments as grids of runs, each run train -> encode -> MIG.

``spec`` reads a TOML spec into runs (each with its ``TrainConfig``), ``execute`` runs one run
through the library, ``executors`` runs many (local worker processes, or submitit), and
``results`` reads finished runs back as typed rows and picks representatives.

Importing this package loads no torch; a run loads it when it starts.
"""

from __future__ import annotations

from isa_core.sweeps.execute import execute_run, mig_arguments, run_state
from isa_core.sweeps.executors import (
    ExecutorKind,
    LocalPool,
    cpu_cores,
    gpu_names,
    submit,
    threads_per_run,
)
from isa_core.sweeps.results import (
    RunResult,
    check_result_rows,
    read_results,
    select_representatives,
)
from isa_core.sweeps.spec import (
    MAX_RUNS,
    NAME_MAX,
    Run,
    SweepSpec,
    check_data,
    check_name,
    eval_flags,
    filter_runs,
    load_manifest,
    load_spec,
    run_folder,
    train_config,
    train_flags,
    write_manifest,
)

__all__ = [
    "MAX_RUNS",
    "NAME_MAX",
    "ExecutorKind",
    "LocalPool",
    "Run",
    "RunResult",
    "SweepSpec",
    "check_data",
    "check_name",
    "check_result_rows",
    "cpu_cores",
    "eval_flags",
    "execute_run",
    "filter_runs",
    "gpu_names",
    "load_manifest",
    "load_spec",
    "mig_arguments",
    "read_results",
    "run_folder",
    "run_state",
    "select_representatives",
    "submit",
    "threads_per_run",
    "train_config",
    "train_flags",
    "write_manifest",
]
