"""Sweep specs and `isa sweep run|status|collect` on dsprites-mini."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from isa_core.errors import IsaError
from isa_core.sweeps import load_spec
from tests.conftest import isa_executable, run_isa, wait_for_metrics

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
    args = runs[2].train_args(Path("out"))
    assert args[:3] == ["train", "-o", "out"] and "--batch-size" in args


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
    ],
)
def test_bad_specs(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(IsaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_spec(write(tmp_path, text))
    result = run_isa(["sweep", "run", str(tmp_path / "spec.toml"), "--dry-run"])
    assert result.returncode == 2 and result.stderr.decode().startswith("isa sweep run: error:")


def test_dry_run_prints_one_line_per_run(tmp_path: Path) -> None:
    spec = write(tmp_path, SPEC.format(steps=4, methods='["bvae", "isa"]'))
    result = run_isa(["sweep", "run", str(spec), "--dry-run", "--only", "method=isa"])
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [line["id"] for line in lines] == ["isa_seed0", "isa_seed1"]


def test_run_skip_resume_status_collect(tmp_path: Path) -> None:
    spec_path = write(tmp_path, SPEC.format(steps=40, methods='["isa"]'))
    spec = load_spec(spec_path)
    out = tmp_path / "sweeps"
    # interrupt run isa_seed1 by hand, as a killed job would leave it
    folder = out / "tiny" / "runs" / "isa_seed1"
    folder.parent.mkdir(parents=True)
    run = spec.runs()[1]
    process = subprocess.Popen(
        [isa_executable(), *run.train_args(folder), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for_metrics(folder, 3)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    result = run_isa(["sweep", "run", str(spec_path), "-o", str(out)])
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert {r["id"]: r["state"] for r in records} == {"isa_seed0": "done", "isa_seed1": "done"}
    assert "--resume" in (folder / "log.txt").read_text()
    again = run_isa(["sweep", "run", str(spec_path), "-o", str(out)])
    assert all(json.loads(line).get("skipped") for line in again.stdout.decode().splitlines())
    status = [
        json.loads(line)
        for line in run_isa(["sweep", "status", str(out / "tiny")]).stdout.decode().splitlines()
    ]
    assert [(s["id"], s["state"], s["step"]) for s in status] == [
        ("isa_seed0", "done", 40),
        ("isa_seed1", "done", 40),
    ]
    rows = [
        json.loads(line)
        for line in run_isa(["sweep", "collect", str(out / "tiny")]).stdout.decode().splitlines()
    ]
    assert len(rows) == 2 and rows[0]["method"] == "isa" and rows[0]["seed"] == 0
    for key in ("config", "mig", "logpx", "gaps", "exponents", "seconds", "model", "codes"):
        assert key in rows[1]
    assert rows[1]["config"]["steps"] == 40 and 0 <= rows[1]["mig"] <= 1
    assert rows[1]["config"]["epochs"] is None  # given --steps, so no epochs were asked for


def test_failed_run_is_recorded_and_others_continue(tmp_path: Path) -> None:
    text = SPEC.format(steps=2, methods='["bvae", "isa"]').replace(
        'layout = "2x2"', 'layout = "3x3"\nlatent_dim = 4'
    )
    spec_path = write(tmp_path, text)
    out = tmp_path / "sweeps"
    result = run_isa(["sweep", "run", str(spec_path), "-o", str(out), "--only", "seed=0"])
    # some runs failed: exit 2, naming how many and where their logs are
    assert result.returncode == 2, result.stderr.decode()
    log = out / "tiny" / "runs" / "isa_seed0" / "log.txt"
    assert f"1 of 2 runs failed; see {log}" in result.stderr.decode()
    states = {
        json.loads(line)["id"]: json.loads(line) for line in result.stdout.decode().splitlines()
    }
    assert states["bvae_seed0"]["state"] == "done"
    assert states["isa_seed0"]["state"] == "failed"
    assert "--latent-dim 4 disagrees" in states["isa_seed0"]["error"]
    status = run_isa(["sweep", "status", str(out / "tiny")]).stdout.decode()
    assert '"state": "failed"' in status


def test_select_picks_the_hand_computed_representative(tmp_path: Path) -> None:
    from isa_core.sweeps import select_representatives

    rows = [
        {"id": "a1", "method": "a", "beta": 1, "mig": 0.1, "logpx": -20.0},
        {"id": "a2", "method": "a", "beta": 1, "mig": 0.3, "logpx": -25.0},
        {"id": "a3", "method": "a", "beta": 1, "mig": 0.5, "logpx": -22.0},
        {"id": "a4", "method": "a", "beta": 1, "mig": 0.4, "logpx": -30.0},
        {"id": "b1", "method": "b", "beta": 1, "mig": 0.2, "logpx": -21.0},
    ]
    # quantile 0.25 keeps a2, a3, a4: mean (0.4, -25.667), variances (0.00667, 10.889);
    # squared distances a2 1.541, a3 2.735, a4 1.724 -> a2
    chosen = {c["method"]: c for c in select_representatives(rows, ["method", "beta"], 0.25)}
    assert chosen["a"]["id"] == "a2" and chosen["a"]["kept"] == 3
    assert chosen["a"]["distance"] == pytest.approx(
        (0.01 / (0.02 / 3) + (2 / 3) ** 2 / (98 / 9)) ** 0.5
    )
    assert chosen["b"]["id"] == "b1" and chosen["b"]["distance"] == 0
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_isa(["select", str(path), "--quantile", "0.25"])
    assert [json.loads(line)["id"] for line in result.stdout.decode().splitlines()] == ["a2", "b1"]
    bad = run_isa(["select", str(path), "--quantile", "1.5"])
    assert bad.returncode == 2 and b"--quantile" in bad.stderr


@pytest.mark.parametrize("spec", sorted(Path(__file__).parent.parent.glob("pipelines/*.toml")))
def test_the_paper_pipelines_parse(spec: Path) -> None:
    runs = load_spec(spec).runs()
    assert runs and len({r.id for r in runs}) == len(runs)


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


def test_submitit_local_executor_runs_the_sweep(tmp_path: Path) -> None:
    spec_path = write(tmp_path, SPEC.format(steps=2, methods='["bvae"]'))
    out = tmp_path / "sweeps"
    result = run_isa(
        [
            "sweep",
            "run",
            str(spec_path),
            "-o",
            str(out),
            "--executor",
            "submitit-local",
            "--only",
            "seed=0",
        ]
    )
    assert result.returncode == 0, result.stderr.decode()
    record = json.loads(result.stdout.decode().splitlines()[-1])
    assert record["id"] == "bvae_seed0" and record["state"] == "done"
    jobs = [json.loads(line) for line in (out / "tiny" / "jobs.jsonl").read_text().splitlines()]
    assert jobs[0]["id"] == "bvae_seed0" and jobs[0]["job_id"]
    slurm = run_isa(["sweep", "run", str(spec_path), "-o", str(out), "--executor", "slurm"])
    assert slurm.returncode == 2 and b"srun not found" in slurm.stderr


def test_local_placement_gives_each_concurrent_run_its_own_gpu(tmp_path: Path) -> None:
    import threading

    from isa_cli.sweep import run_locally

    spec = load_spec(write(tmp_path, SPEC.format(steps=2, methods='["bvae", "isa"]')))
    lock = threading.Lock()
    busy: set[str] = set()
    seen: list[str] = []

    def fake(run, folder, sweep, env):
        device = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert device not in busy  # never two runs on one GPU
            busy.add(device)
            seen.append(device)
        time.sleep(0.05)
        with lock:
            busy.discard(device)
        return {"id": run.id}

    records = list(run_locally(spec.runs(), 8, 2, tmp_path, spec, fake))
    assert [r["id"] for r in records] == [r.id for r in spec.runs()]
    assert set(seen) == {"0", "1"}
    cpu = list(run_locally(spec.runs(), 3, 0, tmp_path, spec, lambda r, f, s, e: {"env": e}))
    assert all("CUDA_VISIBLE_DEVICES" not in r["env"] for r in cpu)


def test_concurrent_cpu_runs_share_the_cores(tmp_path: Path, monkeypatch) -> None:
    from isa_cli.sweep import run_locally
    from isa_core import sweeps

    assert [sweeps.threads_per_run(jobs, cores=16) for jobs in (1, 2, 3, 16, 40)] == [
        16,
        8,
        5,
        1,
        1,
    ]
    with pytest.raises(IsaError, match="--jobs"):
        sweeps.threads_per_run(0, cores=2)
    monkeypatch.setattr(sweeps, "cpu_cores", lambda: 2)
    spec = load_spec(write(tmp_path, SPEC.format(steps=2, methods='["bvae", "isa"]')))
    for jobs, share in ((1, "2"), (2, "1"), (3, "1")):
        runs = run_locally(spec.runs(), jobs, 0, tmp_path, spec, lambda r, f, s, e: {"env": e})
        assert {(r["env"]["OMP_NUM_THREADS"], r["env"]["MKL_NUM_THREADS"]) for r in runs} == {
            (share, share)
        }


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
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
        )
        want = args[args.index("--threads") + 1]
        assert f"THREADS [{want}] 0 {want}" in done.stdout, done.stdout + done.stderr
