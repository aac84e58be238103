"""Sweep specs and `isa sweep run|status|collect` on dsprites-mini."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import pytest

from isa_core.errors import IsaError
from isa_core.sweeps import load_spec
from tests.conftest import isa_in_process as isa

SPEC = """
[sweep]
name = "tiny"
data = "dsprites-mini"

[base]
steps = {steps}
batch_size = 32
log_every = 1
checkpoint_every = 2

[methods.bvae]
prior = "normal"

[methods.isa]
prior = "isa"
layout = "2x2"
p1 = "2.2"

[grid]
method = {methods}
seed = [0, 1]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_expansion_ids_and_flags(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SPEC.format(steps=4, methods='["bvae", "isa"]')))
    runs = spec.runs()
    assert [r.id for r in runs] == ["bvae_seed0", "bvae_seed1", "isa_seed0", "isa_seed1"]
    assert runs[2].flags == {
        "steps": 4,
        "batch_size": 32,
        "log_every": 1,
        "checkpoint_every": 2,
        "data": "dsprites-mini",
        "prior": "isa",
        "layout": "2x2",
        "p1": "2.2",
        "seed": 0,
    }
    assert [r.id for r in load_spec(tmp_path / "spec.toml").runs()] == [r.id for r in runs]


def test_a_run_builds_its_train_config(tmp_path: Path) -> None:
    """The flags become a TrainConfig as `isa train` builds one: the prior flags resolve into
    the tree, steps replace the default epochs, `estimator` is an old name of tc_estimator."""
    from isa_core.choices import Objective, TcEstimator
    from isa_core.config import TrainConfig
    from isa_core.priors import LpTree

    text = SPEC.format(steps=4, methods='["bvae", "isa"]').replace(
        "[grid]", 'objective = "tcvae"\nestimator = "mws"\n\n[grid]'
    )
    with pytest.warns(FutureWarning, match="estimator is the old name of tc_estimator"):
        runs = load_spec(write(tmp_path, text)).runs()
    isa_config = runs[2].train_config()
    assert isa_config == TrainConfig(
        data="dsprites-mini",
        tree=LpTree.parse("2.1(2.2(2),2.2(2))"),
        objective=Objective.tcvae,
        tc_estimator=TcEstimator.mws,
        steps=4,
        epochs=None,
        batch_size=32,
        log_every=1,
        checkpoint_every=2,
        seed=0,
    )
    assert runs[0].train_config().tree == LpTree.normal(20)  # the normal prior's default K
    assert runs[0].device == "auto"


def test_the_flags_are_the_config_fields() -> None:
    """Every field of TrainConfig and PriorSpec is a flag of a spec, of the kind its type says."""
    from isa_core.config import TrainConfig
    from isa_core.priors import PriorSpec
    from isa_core.sweeps import eval_flags, train_flags

    fields = {f.name for f in dataclasses.fields(TrainConfig) + dataclasses.fields(PriorSpec)}
    assert set(train_flags()) == fields | {"device"}
    kinds = {name: kind.__name__ for name, kind in train_flags().items()}
    assert [kinds[name] for name in ("compile", "seed", "beta", "epochs", "p0", "latent_dim")] == [
        "bool",
        "int",
        "float",
        "float",
        "float",
        "int",
    ]
    assert {kinds[name] for name in ("objective", "tree", "p1", "device", "data")} == {"str"}
    assert eval_flags() == {
        "estimator": str,
        "factors": str,
        "samples": int,
        "bins": int,
        "seed": int,
        "group": str,
        "protocol": str,
        "metrics": list,
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"steps": 4, "epochs": 2.0}, "give steps or epochs, not both"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"prior": "normal", "layout": "2x2"}, "layout and p1 describe ISA subspaces"),
        ({"objective": "gan"}, "objective 'gan' is unknown"),
    ],
)
def test_bad_run_configs(flags: dict, message: str) -> None:
    from isa_core.sweeps import train_config

    with pytest.raises(IsaError, match=message):
        train_config(flags)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[grid]\n", "[grid] is empty"),
        ("[grid]\nseed = []\n", "non-empty list"),
        ("[grid]\nseed = [1, 1]\n", "lists a value twice"),
        ("[grid]\nwarp = [1]\n", "not a flag of `isa train`"),
        ("[base]\nwarp = 1\n[grid]\nseed = [0]\n", "not a flag of `isa train`"),
        ("[extra]\nx = 1\n[grid]\nseed = [0]\n", "unknown section"),
        ("[grid]\nmethod = ['nope']\n", "has no [methods.nope]"),
        ("[methods.a]\nbeta = 1\n[methods.a]\nbeta = 2\n[grid]\nseed = [0]\n", "not valid TOML"),
        ("[eval]\nwarp = 1\n[grid]\nseed = [0]\n", "not a flag of `isa mig`"),
        ("[eval]\nmetrics = ['dci', 'bogus']\n[grid]\nseed = [0]\n", "metrics 'bogus' is unknown"),
        ("[eval]\nmetrics = [1]\n[grid]\nseed = [0]\n", "takes a list of names"),
        ("[eval]\nprotocol = 'nope'\n[grid]\nseed = [0]\n", "protocol 'nope' is unknown"),
        (
            "[eval]\nprotocol = 'chen2018'\nbins = 5\n[grid]\nseed = [0]\n",
            "cannot be combined with protocol chen2018",
        ),
        ("[base]\nestimator = 'mss'\ntc_estimator = 'mws'\n[grid]\nseed = [0]\n", "twice"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*old name of tc_estimator:FutureWarning")
def test_bad_specs(tmp_path: Path, capsys, text: str, message: str) -> None:
    with pytest.raises(IsaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_spec(write(tmp_path, text))
    code, _, err = isa(["sweep", "run", tmp_path / "spec.toml", "--dry-run"], capsys)
    assert code == 2 and err.startswith("isa sweep run: error:")


def test_dry_run_prints_one_line_per_run(tmp_path: Path, capsys) -> None:
    spec = write(tmp_path, SPEC.format(steps=4, methods='["bvae", "isa"]'))
    _, out, _ = isa(["sweep", "run", spec, "--dry-run", "--only", "method=isa"], capsys)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == ["isa_seed0", "isa_seed1"]


def interrupt_by_hand(run, folder: Path, at_step: int) -> None:
    """Train ``run`` in ``folder`` and stop it after ``at_step`` steps with a checkpoint, as a
    killed job leaves a run."""
    import torch

    from isa_core.checkpoint import prepare_folder
    from isa_core.training import train

    stop = threading.Event()
    prepare_folder(folder, resume=False, force=False)
    result = train(
        run.train_config(),
        folder,
        torch.device("cpu"),
        stop=stop,
        on_step=lambda step, _total: step >= at_step and stop.set(),
    )
    assert result.interrupted and result.step == at_step


def records_of(out: str) -> dict[str, dict]:
    return {record["id"]: record for record in map(json.loads, out.splitlines())}


def test_run_skip_resume_status_collect(tmp_path: Path, capsys) -> None:
    spec_path = write(tmp_path, SPEC.format(steps=12, methods='["isa"]'))
    out = tmp_path / "sweeps"
    folder = out / "tiny" / "runs" / "isa_seed1"
    interrupt_by_hand(load_spec(spec_path).runs()[1], folder, 3)
    code, stdout, err = isa(["sweep", "run", spec_path, "-o", out], capsys)
    assert code in (0, None), err + stdout
    assert {k: r["state"] for k, r in records_of(stdout).items()} == {
        "isa_seed0": "done",
        "isa_seed1": "done",
    }
    assert "resume from the checkpoint" in (folder / "log.txt").read_text()
    _, again, _ = isa(["sweep", "run", spec_path, "-o", out], capsys)
    assert all(record.get("skipped") for record in records_of(again).values())
    _, status, _ = isa(["sweep", "status", out / "tiny"], capsys)
    assert [(s["id"], s["state"], s["step"]) for s in map(json.loads, status.splitlines())] == [
        ("isa_seed0", "done", 12),
        ("isa_seed1", "done", 12),
    ]
    _, collected, _ = isa(["sweep", "collect", out / "tiny"], capsys)
    rows = [json.loads(line) for line in collected.splitlines()]
    assert len(rows) == 2 and rows[0]["method"] == "isa" and rows[0]["seed"] == 0
    for key in ("config", "mig", "logpx", "gaps", "exponents", "seconds", "model", "codes"):
        assert key in rows[1]
    assert rows[1]["config"]["steps"] == 12 and 0 <= rows[1]["mig"] <= 1
    assert rows[1]["config"]["epochs"] is None  # given --steps, so no epochs were asked for
    assert "scores" not in rows[1]  # no [eval] metrics: the rows keep their keys


def test_a_sweep_run_scores_as_the_library_calls_by_hand(tmp_path: Path, capsys) -> None:
    """One run of a sweep gives the numbers of train -> encode -> mig_report (and the [eval]
    score metrics, through score_codes) called by hand; collect puts the scores in its row."""
    import torch

    from isa_core.checkpoint import load_model, prepare_folder
    from isa_core.codes import encode, load_codes, save_codes
    from isa_core.data import open_dataset
    from isa_core.metrics import mig_report
    from isa_core.scores import score_codes
    from isa_core.sweeps import threads_per_run
    from isa_core.training import train

    text = SPEC.format(steps=3, methods='["bvae"]') + '\n[eval]\nfactors = "scale,x"\n'
    text += 'metrics = ["sap", "modularity", "mig"]\n'
    text = text.replace('prior = "normal"', 'prior = "normal"\nlatent_dim = 3')
    spec_path = write(tmp_path, text)
    code, _, err = isa(["sweep", "run", spec_path, "-o", tmp_path, "--only", "seed=0"], capsys)
    assert code in (0, None), err
    swept = json.loads((tmp_path / "tiny" / "runs" / "bvae_seed0" / "result.json").read_text())

    config = load_spec(spec_path).runs()[0].train_config()
    folder = tmp_path / "by-hand"
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_run(1))  # the sweep's one worker had every core
    try:
        prepare_folder(folder, resume=False, force=False)
        model_path = train(config, folder, cpu).model_path
        model, _ = load_model(model_path, cpu)
        # in the precision it was trained in, as `isa encode` does
        codes = encode(model, open_dataset(config.data), cpu, precision=config.precision)
    finally:
        torch.set_num_threads(threads)
    save_codes(folder / "codes.safetensors", codes)
    by_hand = mig_report(load_codes(folder / "codes.safetensors"), factors=["scale", "x"])
    assert swept["scored_factors"] == ["scale", "x"]
    assert {key: swept[key] for key in by_hand} == by_hand
    # MIG is the record itself; the other metrics are the `isa score` record under "scores"
    scored = score_codes(load_codes(folder / "codes.safetensors"), ["sap", "modularity"])
    assert swept["scores"] == json.loads(json.dumps(scored))
    _, collected, err = isa(["sweep", "collect", tmp_path / "tiny"], capsys)
    (row,) = [json.loads(line) for line in collected.splitlines()]
    assert row["scores"] == {"sap": scored["sap"], "modularity": scored["modularity"]}


def test_failed_run_is_recorded_and_others_continue(tmp_path: Path, capsys) -> None:
    text = SPEC.format(steps=2, methods='["bvae", "isa"]').replace(
        'layout = "2x2"', 'layout = "3x3"\nlatent_dim = 4'
    )
    spec_path = write(tmp_path, text)
    out = tmp_path / "sweeps"
    code, stdout, err = isa(["sweep", "run", spec_path, "-o", out, "--only", "seed=0"], capsys)
    # some runs failed: exit 2, naming how many and where their logs are
    assert code == 2, err
    log = out / "tiny" / "runs" / "isa_seed0" / "log.txt"
    assert f"1 of 2 runs failed; see {log}" in err
    states = records_of(stdout)
    assert states["bvae_seed0"]["state"] == "done"
    assert states["isa_seed0"]["state"] == "failed"
    assert "latent_dim 4 disagrees" in states["isa_seed0"]["error"]
    _, status, _ = isa(["sweep", "status", out / "tiny"], capsys)
    assert '"state": "failed"' in status


def test_select_prints_the_representatives(tmp_path: Path, capsys) -> None:
    """`isa select` on the rows whose selection tests/test_results.py computes by hand."""
    from tests.test_results import SELECTION_ROWS as rows

    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, out, _ = isa(["select", path, "--quantile", "0.25"], capsys)
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["a2", "b1"]
    code, _, err = isa(["select", path, "--quantile", "1.5"], capsys)
    assert code == 2 and "--quantile" in err


@pytest.mark.parametrize("spec", sorted(Path(__file__).parent.parent.glob("pipelines/*.toml")))
def test_the_paper_pipelines_parse(spec: Path) -> None:
    runs = load_spec(spec).runs()
    assert runs and len({r.id for r in runs}) == len(runs)
    assert all(run.train_config() for run in runs)  # every run's config is valid


def test_slurm_submission_script_for_a_sample_configuration(tmp_path: Path) -> None:
    from submitit.slurm.slurm import _make_sbatch_string

    from isa_cli.sweep import slurm_parameters

    params = slurm_parameters("gpu", 180, 1, 8, "32G", 4, "lab", ["constraint=a100"])
    script = _make_sbatch_string(command="echo run", folder=tmp_path, map_count=12, **params)
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=180",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH --account=lab",
        "#SBATCH --constraint=a100",
        "#SBATCH --array=0-11%4",
    ):
        assert line in script, script
    with pytest.raises(IsaError, match="KEY=VALUE"):
        slurm_parameters(None, 10, None, None, None, 1, None, ["nonsense"])


def test_submitit_local_executor_runs_the_sweep(tmp_path: Path, capsys) -> None:
    spec_path = write(tmp_path, SPEC.format(steps=2, methods='["bvae"]'))
    out = tmp_path / "sweeps"
    args = ["sweep", "run", spec_path, "-o", out, "--executor", "submitit-local"]
    code, stdout, err = isa([*args, "--only", "seed=0"], capsys)
    assert code in (0, None), err
    record = json.loads(stdout.splitlines()[-1])
    assert record["id"] == "bvae_seed0" and record["state"] == "done"
    jobs = [json.loads(line) for line in (out / "tiny" / "jobs.jsonl").read_text().splitlines()]
    assert jobs[0]["id"] == "bvae_seed0" and jobs[0]["job_id"]
    code, _, err = isa(["sweep", "run", spec_path, "-o", out, "--executor", "slurm"], capsys)
    assert code == 2 and "srun not found" in err


def where_it_ran(run, folder, evaluation, stop) -> dict:
    """A stand-in for a run (picklable, for the worker processes): where and how it ran."""
    import torch

    return {
        "id": run.id,
        "pid": os.getpid(),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "stopped": stop.is_set(),
    }


def test_local_workers_each_get_their_own_gpu_and_a_share_of_the_cores(tmp_path: Path) -> None:
    from isa_core.sweeps import LocalPool

    spec = load_spec(write(tmp_path, SPEC.format(steps=2, methods='["bvae", "isa"]')))
    pool = LocalPool(8, ["3", "5"], where_it_ran, cores=4)  # two GPUs: two runs at a time
    assert (pool.width, pool.threads) == (2, 2)
    records = list(pool.run(spec.runs(), tmp_path, {}))
    assert [r["id"] for r in records] == [r.id for r in spec.runs()]  # in the spec's order
    gpus = {}
    for record in records:
        gpus.setdefault(record["pid"], set()).add(record["gpu"])
        assert record["threads"] == 2 and not record["stopped"]
    # each worker process saw one GPU of its own, never another's
    assert all(len(seen) == 1 for seen in gpus.values()) and len(gpus) <= 2
    assert set().union(*gpus.values()) <= {"3", "5"}
    cpu = LocalPool(3, [], where_it_ran, cores=2)
    assert (cpu.width, cpu.threads) == (3, 1)
    assert all(r["threads"] == 1 for r in cpu.run(spec.runs()[:1], tmp_path, {}))


def test_concurrent_cpu_runs_share_the_cores() -> None:
    from isa_core.sweeps import LocalPool, threads_per_run

    assert [threads_per_run(jobs, cores=16) for jobs in (1, 2, 3, 16, 40)] == [16, 8, 5, 1, 1]
    with pytest.raises(IsaError, match="jobs must be >= 1"):
        threads_per_run(0, cores=2)
    for jobs, share in ((1, 2), (2, 1), (3, 1)):
        assert LocalPool(jobs, [], cores=2).threads == share


def dies(run, folder, evaluation, stop) -> dict:
    """A stand-in for a run whose process dies (killed, out of memory) without a word."""
    os._exit(3)


def test_a_worker_that_dies_fails_its_run_not_the_sweep(tmp_path: Path) -> None:
    from isa_core.sweeps import LocalPool

    spec = load_spec(write(tmp_path, SPEC.format(steps=2, methods='["bvae"]')))
    records = list(LocalPool(1, [], dies).run(spec.runs(), tmp_path, {}))
    assert [(r["id"], r["state"]) for r in records] == [
        ("bvae_seed0", "failed"),
        ("bvae_seed1", "failed"),
    ]
    assert records[0]["error"] == "its worker process ended with exit status 3"
    assert records[1]["error"] == "no worker process was left to run it"


def test_a_stopped_pool_starts_no_run(tmp_path: Path) -> None:
    import signal

    from isa_core.sweeps import LocalPool

    spec = load_spec(write(tmp_path, SPEC.format(steps=2, methods='["bvae", "isa"]')))
    pool = LocalPool(2, [], where_it_ran)
    pool.stop(signal.SIGTERM)
    assert {r["state"] for r in pool.run(spec.runs(), tmp_path, {})} == {"pending"}
    assert pool.signal == signal.SIGTERM


def test_train_threads_sets_torch_threads_and_may_change_on_resume(tmp_path: Path) -> None:
    """`isa train --threads T` runs with T intra-op threads (what sweeps pass each run)."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from isa_cli.main import main\n"
        "seen = []\n"
        "real = torch.set_num_threads\n"
        "torch.set_num_threads = lambda n: (seen.append(n), real(n))\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as done:\n"
        "    print('THREADS', seen, done.code, torch.get_num_threads())\n"
    )
    run = str(tmp_path / "run")
    base = ["--data", "dsprites-mini", "--arch", "conv", "--batch-size", "8", "-q", "-o", run]
    for args in (
        ["train", *base, "--steps", "2", "--threads", "1"],
        ["train", "--resume", "-o", run, "--steps", "3", "--threads", "2"],
    ):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        want = args[args.index("--threads") + 1]
        assert f"THREADS [{want}] 0 {want}" in done.stdout, done.stdout + done.stderr
