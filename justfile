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

# The demo: sample the paper's ISA prior, score the samples, draw 2-D priors (Figs. 2-3),
# and preview the built-in dSprites.
demo:
    mkdir -p {{out}}
    isa prior-sample --layout 5x4 --p0 2.1 --p1 2.2 -n 100000 --seed 0 -o {{out}}/z.npy
    isa prior-logpdf {{out}}/z.npy --layout 5x4 --p0 2.1 --p1 2.2 --text \
        | awk '{ s += $1 } END { printf "mean log p(z) over %d ISA 5x4 samples: %.4f nats\n", NR, s / NR }' >&2
    isa prior-sample --tree '1(2)' -n 2000 --seed 1 | isa prior-plot - --tree '1(2)' -o {{out}}/prior-leptokurtic.png
    isa prior-sample --tree '4(2)' -n 2000 --seed 1 | isa prior-plot - --tree '4(2)' -o {{out}}/prior-platykurtic.png
    isa prior-plot --tree '2.1(2.2(2))' --samples 2000 -o {{out}}/prior-isa-subspace.png
    isa data info dsprites-mini
    isa data preview dsprites -o {{out}}/dsprites.png

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
