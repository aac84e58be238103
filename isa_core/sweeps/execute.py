"""One run of a sweep, through the library: train (or resume) -> encode -> MIG (and the scores
``[eval] metrics`` lists), in its folder.

Beside the training run's own files, a run folder holds ``codes.safetensors``, ``result.json``
(the `isa mig` record of the codes with the run's id, method, grid and seconds, and under
``scores`` the `isa score` record when ``[eval]`` lists metrics), ``log.txt``
(what each stage did; a failure's traceback) and ``error.txt`` (why the run last failed, one
line). A run with ``result.json`` is done, one with ``error.txt`` failed, and one with only
metrics is running or was interrupted: the next `isa sweep run` resumes it from its checkpoint.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from isa_core.errors import IsaError
from isa_core.locks import folder_lock
from isa_core.sweeps.spec import Run

__all__ = [
    "CODES_FILE",
    "ERROR_FILE",
    "LOG_FILE",
    "RESULT_FILE",
    "execute_run",
    "mig_arguments",
    "run_state",
    "score_arguments",
]

CODES_FILE = "codes.safetensors"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
LOG_FILE = "log.txt"
ENCODE_BATCH = 2048  # images per encoding batch, as `isa encode` takes them


class _Stopped(Exception):
    """The run was asked to stop (a signal to the sweep) before it finished."""


def mig_arguments(evaluation: dict[str, Any]) -> dict[str, Any]:
    """``protocol_mig``'s keyword arguments (those of ``mig_report`` and ``protocol``) from a
    spec's ``[eval]``: ``factors`` is written as on the command line, ``scale,x,y``."""
    arguments = {key: value for key, value in evaluation.items() if key != "metrics"}
    if isinstance(arguments.get("factors"), str):
        arguments["factors"] = [f.strip() for f in arguments["factors"].split(",") if f.strip()]
    return arguments


def score_arguments(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """``score_codes``'s keyword arguments from a spec's ``[eval]``, or None when it lists no
    score besides MIG (which every run computes)."""
    metrics = [m for m in evaluation.get("metrics", []) if m != "mig"]
    if not metrics:
        return None
    return {
        "metrics": metrics,
        "seed": evaluation.get("seed", 0),
        "protocol": evaluation.get("protocol", "isa"),
    }


def execute_run(
    run: Run,
    folder: Path,
    evaluation: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Train (or resume), encode and score ``run`` in ``folder``; its record: id and state
    (done with mig and logpx, failed with the error, interrupted, or pending when ``stop``
    was set before it began). A failure is recorded in the folder, never raised, so that the
    other runs of the sweep go on."""
    if stop is not None and stop.is_set():
        return {"id": run.id, "state": "pending"}
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return {"id": run.id, "state": "failed", "error": f"cannot create {folder}: {error}"}
    start = time.perf_counter()
    (folder / ERROR_FILE).unlink(missing_ok=True)
    with (folder / LOG_FILE).open("a") as log:
        try:
            with folder_lock(folder, "isa sweep run"):
                result = _train_encode_score(run, folder, evaluation or {}, stop, log)
        except _Stopped:
            # no error.txt: the next `isa sweep run` resumes the run from its checkpoint
            log.write("stopped; the next `isa sweep run` resumes the run\n")
            return {"id": run.id, "state": "interrupted"}
        except IsaError as error:
            message = str(error)
        except Exception as error:  # a bug, or the machine (out of memory): this run fails alone
            log.write(traceback.format_exc())
            message = f"{type(error).__name__}: {error}"
        else:
            result.update(
                id=run.id, method=run.method, grid=run.grid, seconds=time.perf_counter() - start
            )
            from isa_core import io

            with io.atomic_write(folder / RESULT_FILE) as handle:
                handle.write(json.dumps(result).encode())
            log.write(f"done: mig {result.get('mig')}, logpx {result.get('logpx')}\n")
            return {"id": run.id, "state": "done", "mig": result["mig"], "logpx": result["logpx"]}
        log.write(f"failed: {message}\n")
    (folder / ERROR_FILE).write_text(message + "\n")
    return {"id": run.id, "state": "failed", "error": message}


def _train_encode_score(
    run: Run,
    folder: Path,
    evaluation: dict[str, Any],
    stop: threading.Event | None,
    log: IO[str],
) -> dict[str, Any]:
    """The stages of a run; its `isa mig` record (with ``scores``, the `isa score` record, when
    ``[eval]`` lists metrics). Raises _Stopped when ``stop`` is set."""
    from isa_core import checkpoint, training
    from isa_core.codes import encode, load_codes, save_codes
    from isa_core.devices import resolve_device
    from isa_core.scores import protocol_mig, score_codes

    def say(line: str) -> None:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        log.flush()

    def check_stop(*_progress: int) -> None:
        if stop is not None and stop.is_set():
            raise _Stopped

    device = resolve_device(run.device)
    # The state file alone is a complete checkpoint (it carries the weights too).
    resume = (folder / checkpoint.STATE_FILE).exists()
    if resume:
        checkpoint.prepare_folder(folder, resume=True, force=False)
        config = checkpoint.read_run_config(folder)  # a resumed run keeps its stored config
        say(f"train: resume from the checkpoint in {folder} on {device}")
    else:
        config = run.train_config()
        say(f"train: new run on {device}: {json.dumps(config.to_metadata())}")
    data = training.open_run_data(config)
    if not resume:
        checkpoint.prepare_folder(folder, resume=False, force=True)
    trained = training.train(config, folder, device, data=data, resume=resume, stop=stop)
    if trained.interrupted:
        say(f"train: stopped at step {trained.step}, checkpoint saved")
        raise _Stopped
    say(f"train: step {trained.step}, {trained.model_path}")
    check_stop()
    model, meta = checkpoint.load_model(trained.model_path, device)
    codes = encode(
        model, data, device, ENCODE_BATCH, on_batch=check_stop, precision=config.precision
    )
    codes.metadata.update(
        model=str(trained.model_path), config=meta["config"], data_source=config.data
    )
    path = folder / CODES_FILE
    save_codes(path, codes)
    say(f"encode: {len(codes.mean)} images, {path}")
    # Scored from the file, as `isa mig CODES` scores it: the same float64 numbers, checked.
    scored = load_codes(path)
    result = {"input": str(path), **protocol_mig(scored, **mig_arguments(evaluation))}
    arguments = score_arguments(evaluation)
    if arguments is not None:
        check_stop()
        result["scores"] = score_codes(scored, **arguments)
        say(f"score: {', '.join(arguments['metrics'])}")
    return result


def run_state(folder: Path) -> dict[str, Any]:
    """State of a run folder: pending, running (or interrupted), done or failed, with details."""
    from isa_core.checkpoint import METRICS_FILE

    state: dict[str, Any] = {"state": "pending", "step": 0}
    metrics = folder / METRICS_FILE
    if metrics.is_file():
        lines = metrics.read_text(errors="replace").splitlines()
        if lines:
            try:
                last = json.loads(lines[-1])
            except ValueError:  # a line cut short by a kill
                last = None
            if isinstance(last, dict):
                step, loss = last.get("step"), last.get("loss")
                state["step"] = step if isinstance(step, int) and not isinstance(step, bool) else 0
                state["loss"] = loss if _is_number(loss) else None
        state["state"] = "running"
    if (folder / ERROR_FILE).is_file():
        state["state"] = "failed"
        lines = (folder / ERROR_FILE).read_text(errors="replace").strip().splitlines()
        state["error"] = lines[-1] if lines else ""
    if (folder / RESULT_FILE).exists():
        state["state"] = "done"
    return state


def _is_number(value: Any) -> bool:
    """A finite int or float, not a bool (JSON integers may have hundreds of digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= sys.float_info.max  # False for NaN; exact for huge ints
