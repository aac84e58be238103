# isa: recipes for people and CI. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Put the interpreter's script folder (where pip put `isa`) first on PATH.
python := env_var_or_default("PYTHON", "python3")
scripts := `${PYTHON:-python3} -c 'import sysconfig; print(sysconfig.get_path("scripts"))'`
export PATH := scripts + ":" + env_var("PATH")
out := "demo-out"

# List the recipes.
default:
    @just --list

# The demo, a few minutes on a CPU: train a small ISA-TCVAE on the built-in dsprites-mini,
# encode it, score MIG and log p(x|z), and draw the appendix A.5 figures into demo-out/.
demo:
    mkdir -p {{out}}
    isa train --data dsprites-mini --prior isa --layout 5x4 --p0 2.1 --p1 2.2 \
        --objective tcvae --beta 4 --steps 1200 --batch-size 256 --force -o {{out}}/run \
        | isa encode | isa mig
    isa traverse {{out}}/run/model.safetensors --codes {{out}}/run/codes.safetensors \
        --index 2000 -o {{out}}/traversal.png
    isa traverse {{out}}/run/model.safetensors --codes {{out}}/run/codes.safetensors \
        --kind latent-vs-true -o {{out}}/latent-vs-true.png
    isa prior-sample --tree '1(2)' -n 2000 --seed 1 | isa prior-plot - --tree '1(2)' -o {{out}}/prior-leptokurtic.png
    isa prior-sample --tree '4(2)' -n 2000 --seed 1 | isa prior-plot - --tree '4(2)' -o {{out}}/prior-platykurtic.png
    isa data preview dsprites -o {{out}}/dsprites.png

# Run (or resume) a sweep spec on this machine: `just sweep pipelines/mini.toml 2`.
sweep spec jobs="1":
    isa sweep run {{spec}} -o sweeps --jobs {{jobs}}

# The CPU-sized experiment end to end: sweep, collect, representatives, figures (sweeps/mini/).
mini:
    isa sweep run pipelines/mini.toml -o sweeps
    isa sweep collect sweeps/mini -o sweeps/mini/results.jsonl
    isa select sweeps/mini/results.jsonl | tee sweeps/mini/representatives.jsonl
    isa plot scatter sweeps/mini/results.jsonl -o sweeps/mini/scatter.png
    isa plot mig-dist sweeps/mini/results.jsonl --beta 1 -o sweeps/mini/mig-dist.png

# The appendix-B factor-analysis figures (figures/).
toy-figs:
    mkdir -p figures
    isa toy-fa --beta 1 --beta 2 --beta 4 -o figures/toy-fa-rotation.png > figures/toy-fa-rotation.jsonl
    isa toy-fa --experiment prune --beta 1 --beta 2 -o figures/toy-fa-prune.png > figures/toy-fa-prune.jsonl
    isa plot prior-contours -o figures/prior-contours.png

# Run the tests (slow ones excluded; `just test-all` includes them). Extra args go to pytest.
test *args:
    {{python}} -m pytest -m "not slow" {{args}}

# Run every test, the slow statistical and end-to-end ones included.
test-all *args:
    {{python}} -m pytest -m "" {{args}}

# Lint and format-check.
lint:
    ruff check .
    ruff format --check .

# Speed benchmarks against their anchors; prints the README's table.
bench:
    {{python}} benchmarks/bench_prior.py
    {{python}} benchmarks/bench_data.py
    {{python}} benchmarks/bench_train.py
    {{python}} benchmarks/bench_mig.py
