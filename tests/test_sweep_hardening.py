"""Issue #11, sweeps: specs stay inside --out, one writer per sweep folder, signals reach the
runs, bad input is one line with exit 2, and failed runs make `isa sweep run` fail."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from isa_core import io
from isa_core.errors import IsaError
from isa_core.sweeps import MAX_RUNS, NAME_MAX, SweepSpec, load_spec, run_state
from tests.conftest import isa_executable, wait_for_metrics
from tests.conftest import isa_in_process as isa


def assert_refused(result: tuple[int, str, str], command: str, *needles: str) -> None:
    """Exit 2 with one line `isa COMMAND: error: ...` holding every needle."""
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"isa {command}: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tree_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# 1. path traversal -------------------------------------------------------------------------


def test_specs_cannot_write_outside_out(tmp_path: Path, capsys) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "model.safetensors").write_bytes(b"precious")
    other = tmp_path / "abs" / "path"
    other.mkdir(parents=True)
    (other / "sweep.json").write_text('{"name": "other", "runs": []}')
    out = tmp_path / "a" / "b" / "c" / "d"
    method = write(
        tmp_path / "method.toml",
        '[sweep]\ndata = "dsprites-mini"\n[methods."../../../../victim"]\nprior = "normal"\n'
        '[grid]\nmethod = ["../../../../victim"]\n',
    )
    name = write(
        tmp_path / "name.toml",
        f'[sweep]\nname = "{other}"\ndata = "dsprites-mini"\n[grid]\nseed = [0]\n',
    )
    before = tree_files(tmp_path)
    for spec, bad in ((method, "'../../../../victim'"), (name, repr(str(other)))):
        result = isa(["sweep", "run", str(spec), "-o", str(out)], capsys)
        assert_refused(result, "sweep run", bad, "not a safe folder name", "letters, digits")
    assert tree_files(tmp_path) == before
    assert not out.exists()


def test_run_folders_must_resolve_inside_the_sweep(tmp_path: Path, capsys) -> None:
    spec = write(
        tmp_path / "s.toml", '[sweep]\nname = "s"\ndata = "dsprites-mini"\n[grid]\nseed = [0]\n'
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out" / "s" / "runs").mkdir(parents=True)
    (tmp_path / "out" / "s" / "runs" / "seed0").symlink_to(outside)
    result = isa(["sweep", "run", str(spec), "-o", str(tmp_path / "out")], capsys)
    assert_refused(result, "sweep run", "resolves outside the sweep folder")
    assert list(outside.iterdir()) == []
    # a sweep.json edited by hand cannot send status or collect elsewhere either
    manifest = {"name": "s", "runs": [{"id": "../../outside", "method": None, "grid": {}}]}
    (tmp_path / "out" / "s" / "sweep.json").write_text(json.dumps(manifest))
    for command in ("status", "collect"):
        result = isa(["sweep", command, str(tmp_path / "out" / "s")], capsys)
        assert_refused(result, f"sweep {command}", "'../../outside'", "not a safe folder name")


# 5. long grid values -----------------------------------------------------------------------


def test_long_grid_values_get_short_unique_stable_ids(tmp_path: Path) -> None:
    long_a, long_b = "2(" + "1," * 150 + "1)", "2(" + "1," * 150 + "2)"
    spec = write(
        tmp_path / "s.toml",
        f'[grid]\ntree = ["{long_a}", "{long_b}", "2(2)"]\nseed = [0, 1]\n',
    )
    ids = [r.id for r in load_spec(spec).runs()]
    assert len(set(ids)) == len(ids) == 6
    assert all(len(i) <= NAME_MAX for i in ids) and "tree2-2-_seed0" in ids
    assert ids[0].startswith("tree2-1-1-1") and ids[0] != ids[2]
    assert [r.id for r in load_spec(spec).runs()] == ids  # the same ids on every rerun


# 6. failed runs ----------------------------------------------------------------------------


def test_failed_runs_make_the_sweep_fail_and_name_their_logs(tmp_path: Path, capsys) -> None:
    # two runs with 300-character device names: each folder is made (no ENAMETOOLONG) and
    # each run fails quickly, before training
    devices = ["x" * 300, "y" * 300]
    spec = write(
        tmp_path / "s.toml",
        f'[sweep]\nname = "s"\ndata = "dsprites-mini"\n[base]\nsteps = 1\n'
        f"[grid]\ndevice = {json.dumps(devices)}\n",
    )
    code, out, err = isa(["sweep", "run", str(spec), "-o", str(tmp_path / "out")], capsys)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["state"] for r in records] == ["failed", "failed"]
    logs = sorted((tmp_path / "out" / "s" / "runs").glob("*/log.txt"))
    assert len(logs) == 2 and all(len(log.parent.name) <= NAME_MAX for log in logs)
    assert_refused((code, out, err), "sweep run", "2 of 2 runs failed", str(logs[0]))


# 7. dry run checks the data ----------------------------------------------------------------


def test_dry_run_checks_the_data_exists(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = '[sweep]\nname = "s"\n[methods.m]\ndata = "{data}"\n[grid]\nmethod = ["m"]\n'
    spec = write(tmp_path / "s.toml", text.format(data="data/missing.npz"))
    result = isa(["sweep", "run", str(spec), "--dry-run"], capsys)
    assert_refused(result, "sweep run", "'data/missing.npz'", "dsprites-mini")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "missing.npz").write_bytes(b"")
    for data in ("data/missing.npz", "dsprites-mini", "dsprites"):
        write(spec, text.format(data=data))
        code, out, err = isa(["sweep", "run", str(spec), "--dry-run"], capsys)
        assert code in (0, None) and json.loads(out)["flags"]["data"] == data, err


# 8. --only compares values by type ---------------------------------------------------------


def test_only_compares_typed_values_and_refuses_no_match(tmp_path: Path, capsys) -> None:
    spec = write(
        tmp_path / "s.toml",
        '[sweep]\ndata = "dsprites-mini"\n[methods.a]\n[methods."2.2"]\n'
        '[grid]\nmethod = ["a", "2.2"]\nbeta = [1.0, 2.5]\nlearn_exponents = [true, false]\n',
    )

    def ids(*only: str) -> list[str]:
        args = ["sweep", "run", str(spec), "--dry-run"]
        for item in only:
            args += ["--only", item]
        code, out, err = isa(args, capsys)
        assert code in (0, None), err
        return [json.loads(line)["id"] for line in out.splitlines()]

    assert ids("beta=1", "method=a") == [
        "a_beta1_learn_exponentsTrue",
        "a_beta1_learn_exponentsFalse",
    ]
    assert ids("beta=1.0", "learn-exponents=false", "method=a") == ["a_beta1_learn_exponentsFalse"]
    assert ids("method=2.2", "beta=2.5", "learn_exponents=true") == [
        "2.2_beta2.5_learn_exponentsTrue"
    ]
    assert ids('method="a"', "beta=2.5", "learn_exponents=true") == [
        "a_beta2.5_learn_exponentsTrue"
    ]
    result = isa(["sweep", "run", str(spec), "--dry-run", "--only", "beta=3"], capsys)
    assert_refused(result, "sweep run", "'beta=3' matches no run", "beta takes 1.0, 2.5")
    result = isa(["sweep", "run", str(spec), "--dry-run", "--only", "seed=0"], capsys)
    assert_refused(result, "sweep run", "seed is not a key", "method, beta, learn_exponents")


# 9. collected configs ----------------------------------------------------------------------


def test_collect_reports_no_epochs_for_runs_given_steps(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "s"
    manifest = {"name": "s", "runs": []}
    for run_id, config in (
        ("old", {"steps": 40, "epochs": 20.0, "seed": 0}),  # before train stored None
        ("new", {"steps": 40, "epochs": None, "seed": 0}),
        ("epochs", {"steps": 0, "epochs": 3.0, "seed": 0}),
    ):
        run_dir = folder / "runs" / run_id
        run_dir.mkdir(parents=True)
        io.save_bundle(run_dir / "model.safetensors", {"w": torch.zeros(1)}, {"config": config})
        (run_dir / "metrics.jsonl").write_text('{"step": 40, "loss": 1.0}\n')
        result = {"mig": 0.1, "logpx": -20.0, "factors": [{"name": "x", "gap": 0.1}]}
        (run_dir / "result.json").write_text(json.dumps(result))
        manifest["runs"].append({"id": run_id, "method": None, "grid": {}})
    (folder / "sweep.json").write_text(json.dumps(manifest))
    code, out, err = isa(["sweep", "collect", str(folder)], capsys)
    assert code in (0, None), err
    epochs = {row["id"]: row["config"]["epochs"] for row in map(json.loads, out.splitlines())}
    assert epochs == {"old": None, "new": None, "epochs": 3.0}


def test_collect_gives_beta_fixed_in_base_so_select_can_group(tmp_path: Path, capsys) -> None:
    """A spec with β in [base], not in the grid (fig5a-cpu.toml): rows still carry beta."""
    folder = tmp_path / "s"
    manifest = {"name": "s", "runs": []}
    for seed, method in ((0, "a"), (1, "a"), (0, "b"), (1, "b")):
        run_id = f"{method}_seed{seed}"
        run_dir = folder / "runs" / run_id
        run_dir.mkdir(parents=True)
        config = {"beta": 1.0, "seed": seed, "steps": 4, "epochs": None}
        io.save_bundle(run_dir / "model.safetensors", {"w": torch.zeros(1)}, {"config": config})
        (run_dir / "metrics.jsonl").write_text('{"step": 4, "loss": 1.0}\n')
        result = {"mig": 0.1 + seed, "logpx": -20.0, "factors": [{"name": "x", "gap": 0.1}]}
        (run_dir / "result.json").write_text(json.dumps(result))
        manifest["runs"].append({"id": run_id, "method": method, "grid": {"seed": seed}})
    (folder / "sweep.json").write_text(json.dumps(manifest))
    results = tmp_path / "results.jsonl"
    code, _, err = isa(["sweep", "collect", str(folder), "-o", str(results)], capsys)
    assert code in (0, None), err
    assert {json.loads(line)["beta"] for line in results.read_text().splitlines()} == {1.0}
    code, out, err = isa(["select", str(results)], capsys)
    assert code in (0, None), err
    picked = [json.loads(line) for line in out.splitlines()]
    assert [(r["method"], r["beta"]) for r in picked] == [("a", 1.0), ("b", 1.0)]


# 3. bad input is one line, exit 2 -----------------------------------------------------------


def row(**changes: object) -> bytes:
    """One results line: a valid row with ``changes`` (NaN and infinities as Python writes them)."""
    fields = {"id": "a", "method": "m", "beta": 1, "mig": 0.1, "logpx": -2.0, **changes}
    return (json.dumps(fields) + "\n").encode()


ROWS_CASES = {
    "folder": (None, "is a folder"),
    "binary": (b"\x00\xff\xfe\x80binary", "is not text"),
    "not JSON": (b"{nope\n", ":1 is not a JSON line"),
    "a list row": (b"[1, 2]\n", "row 1 is a list, not a JSON object"),
    "a number row": (b"3\n", "row 1 is 3, not a JSON object"),
    "string mig": (row(mig="high"), "mig 'high'"),
    "NaN mig": (row(mig=float("nan")), "mig nan"),
    "inf logpx": (row(logpx=float("-inf")), "logpx -inf"),
    "string beta": (row(beta="x"), "beta 'x'"),
    "list group": (row(method=[1]), "method [1]"),
    "huge int mig": (row(mig=10**400), "mig 10000000000"),
    "huge mig": (
        row(mig=1e308) + row(id="b", mig=-1e308),
        "mig 1e+308; it must be a number in 0..1",
    ),
    "negative mig": (row(mig=-5.0), "mig -5.0; it must be a number in 0..1"),
    "huge logpx": (row(logpx=-1e300), "logpx -1e+300; it must be a finite number of magnitude"),
    "huge int beta": (row(beta=10**400), "beta 10000000000"),
    "huge exponents": (row(exponents=[2.0, 10**400]), "it must be a list of finite numbers"),
    "empty": (b"", "holds no results; give the results file (JSON lines) of `isa sweep collect`"),
}


@pytest.mark.parametrize("case", list(ROWS_CASES))
@pytest.mark.parametrize(
    "command", [["select"], ["plot", "scatter"], ["plot", "mig-dist"], ["plot", "exponents"]]
)
def test_bad_results_files(tmp_path: Path, capsys, case: str, command: list[str]) -> None:
    content, message = ROWS_CASES[case]
    path = tmp_path / "results.jsonl"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    if command[0] == "plot" and case == "list group":
        return  # plots do not group by method
    args = [*command, str(path)] + (["-o", str(tmp_path / "x.png")] if command[0] == "plot" else [])
    result = isa(args, capsys)
    assert_refused(result, " ".join(command), message)
    assert result[2].count(str(path)) == 1, result[2]  # the file is named once
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("exponents", "message"),
    [
        ([None, None], "no run in the results learned its exponents; train with"),
        ([[2.1, 2.0], [2.1]], "the learned exponent lists have lengths 1 and 2; each"),
        ([[2.1], [2.1]], "the learned exponent lists have lengths 1; each"),
    ],
)
def test_plot_exponents_refuses_exponents_it_cannot_draw(
    tmp_path: Path, capsys, exponents: list, message: str
) -> None:
    path = tmp_path / "results.jsonl"
    config = {"learn_exponents": True}
    path.write_bytes(
        b"".join(row(id=str(i), exponents=e, config=config) for i, e in enumerate(exponents))
    )
    result = isa(["plot", "exponents", str(path), "-o", str(tmp_path / "x.png")], capsys)
    assert_refused(result, "plot exponents", f"{path}: {message}")
    assert not (tmp_path / "x.png").exists()


def test_extreme_but_plausible_results_still_select(tmp_path: Path, capsys) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(row(mig=0.0, logpx=-1e12) + row(id="b", mig=1.0, logpx=-1e12))
    code, out, err = isa(["select", str(path)], capsys)
    assert code in (0, None) and json.loads(out)["kept"] == 1, err


SPEC_CASES = {
    "section not a table": (b'sweep = "x"\n[grid]\nseed = [0]\n', "sweep is 'x', not a table"),
    "grid not a table": (b"grid = [1]\n", "grid is a list, not a table"),
    "eval not a table": (b"eval = 3\n[grid]\nseed = [0]\n", "eval is 3, not a table"),
    "date value": (b"[base]\nseed = 1979-05-27\n[grid]\nbeta = [1]\n", "date/time 1979-05-27"),
    "time in grid": (b"[grid]\nbeta = [07:32:00]\n", "date/time 07:32:00"),
    "table value": (b"[base]\nbeta = {a = 1}\n[grid]\nseed = [0]\n", "beta is a table"),
    "list value": (b"[base]\nbeta = [1]\n[grid]\nseed = [0]\n", "beta is a list"),
    "string for int": (b'[grid]\nseed = ["a"]\n', "--seed takes an integer"),
    "bool for number": (b"[grid]\nbeta = [true]\n", "--beta takes a value, not true/false"),
    "string for switch": (b'[grid]\nlearn_exponents = ["yes"]\n', "true or false"),
    "nested method": (b'[grid]\nmethod = [["a"]]\n', "method lists a list"),
    "name not text": (b"[sweep]\nname = 5\n[grid]\nseed = [0]\n", "name is 5; write a string"),
    "bad name": (b'[sweep]\nname = ".hidden"\n[grid]\nseed = [0]\n', "'.hidden' is not a safe"),
    "binary": (b"\x00\x80\xff\xfe", "not valid TOML"),
    "NUL in text": (b"[grid]\nseed = [0]\x00\n", "not valid TOML"),
    "grid bomb": (
        b"[grid]\n"
        + b"".join(
            b"%s = [%s]\n" % (k, b", ".join(b"%d" % v for v in range(40)))
            for k in (
                b"seed",
                b"beta",
                b"gamma",
                b"lr",
                b"steps",
                b"batch_size",
                b"latent_dim",
                b"log_every",
            )
        ),
        "the grid gives 6,553,600,000,000 runs, more than the 100,000",
    ),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_specs_are_one_line(tmp_path: Path, capsys, case: str) -> None:
    content, message = SPEC_CASES[case]
    spec = tmp_path / "spec.toml"
    spec.write_bytes(content)
    with pytest.raises(IsaError, match=r"^[^\n]*$"):
        load_spec(spec)
    result = isa(["sweep", "run", str(spec), "-o", str(tmp_path / "out"), "--dry-run"], capsys)
    assert_refused(result, "sweep run", message)


def test_grids_are_counted_before_they_are_expanded() -> None:
    spec = SweepSpec("s", {}, {}, {"seed": list(range(MAX_RUNS + 1))})
    assert spec.count() == MAX_RUNS + 1
    with pytest.raises(IsaError, match="sweep s: the grid gives 100,001 runs"):
        spec.runs()


def test_spec_that_is_a_folder(tmp_path: Path, capsys) -> None:
    result = isa(["sweep", "run", str(tmp_path), "--dry-run"], capsys)
    assert_refused(result, "sweep run", "is a folder")


MANIFEST_CASES = {
    "not JSON": (b"{oops", "is not JSON"),
    "binary": (b"\xff\xfe\x00\x81", "is not JSON"),
    "a list": (b"[1, 2]", "is not a sweep manifest"),
    "runs not a list": (b'{"runs": 3}', "is not a sweep manifest"),
    "run not an object": (b'{"runs": [1]}', "is not a sweep manifest"),
    "run without grid": (b'{"runs": [{"id": "a", "method": null}]}', "is not a sweep manifest"),
    "id not text": (b'{"runs": [{"id": 7, "method": null, "grid": {}}]}', "run id 7"),
    "folder": (None, "is a folder"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
@pytest.mark.parametrize("command", ["status", "collect"])
def test_bad_sweep_json(tmp_path: Path, capsys, case: str, command: str) -> None:
    content, message = MANIFEST_CASES[case]
    if content is None:
        (tmp_path / "sweep.json").mkdir()
    else:
        (tmp_path / "sweep.json").write_bytes(content)
    assert_refused(isa(["sweep", command, str(tmp_path)], capsys), f"sweep {command}", message)


def test_bad_run_files_in_collect_and_status(tmp_path: Path, capsys) -> None:
    manifest = {"name": "s", "runs": [{"id": "a", "method": None, "grid": {}}]}
    (tmp_path / "sweep.json").write_text(json.dumps(manifest))
    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_bytes(b'{"step": 3, "loss": "x"}\n[1]\n\xff\xfe')
    code, out, err = isa(["sweep", "status", str(tmp_path)], capsys)
    assert code in (0, None) and json.loads(out)["state"] == "running", err
    for content in (b"\xff\x00", b"[1]", b'{"mig": 0.1}', b'{"mig": 0.1, "factors": [3]}'):
        (run_dir / "result.json").write_bytes(content)
        result = isa(["sweep", "collect", str(tmp_path)], capsys)
        assert_refused(result, "sweep collect", str(run_dir / "result.json"))


# 2 and 4. one writer per sweep; signals reach the runs --------------------------------------

LONG_SPEC = """
[sweep]
name = "long"
data = "dsprites-mini"

[base]
steps = 100000
batch_size = 16
log_every = 1
checkpoint_every = 100000
prior = "normal"
latent_dim = 2

[grid]
seed = [0]
"""


def workers_of(pid: int) -> list[int]:
    """The sweep's worker processes: children of ``pid`` started by multiprocessing's spawn
    (Linux /proc), not its resource tracker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("number", "status"),
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
)
def test_second_writer_is_refused_and_signals_stop_the_runs(
    tmp_path: Path, capsys, number: int, status: int
) -> None:
    spec = write(tmp_path / "long.toml", LONG_SPEC)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [isa_executable(), "sweep", "run", str(spec), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    run_dir = out / "long" / "runs" / "seed0"
    try:
        wait_for_metrics(run_dir, 2)
        workers = workers_of(process.pid)
        assert workers, "the sweep should be running its run in a worker process"
        code, _, err = isa(["sweep", "run", spec, "-o", out], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert f"in use by process {process.pid}" in err and "isa sweep run" in err
        process.send_signal(number)
        _, stderr = process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == status, stderr.decode()
    assert signal.Signals(number).name.encode() in stderr
    assert b"run the same command again" in stderr
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # no orphans
    assert (run_dir / "train_state.safetensors").exists()  # train checkpointed on the signal
    assert not (run_dir / "error.txt").exists()  # interrupted, not failed: a rerun resumes it
    assert run_state(run_dir)["state"] == "running"
