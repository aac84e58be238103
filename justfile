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

# (A few minutes on a CPU; everything lands in demo-out/.)
# The demo: train a small ISA-TCVAE on dsprites-mini, encode, score MIG and logpx, draw A.5 figures.
demo:
    mkdir -p {{out}}
    isa train --data dsprites-mini --prior isa --layout 5x4 --p0 2.1 --p1 2.2 \
        --objective tcvae --beta 4 --steps 1200 --batch-size 256 --force -o {{out}}/run \
        | isa encode | isa mig
    isa traverse {{out}}/run/model.safetensors --codes {{out}}/run/codes.safetensors \
        --index 2000 -o {{out}}/traversal.png
    isa traverse {{out}}/run/model.safetensors --codes {{out}}/run/codes.safetensors \
        --index 2000 -o {{out}}/traversal.gif
    isa traverse {{out}}/run/model.safetensors --kind reconstructions --index 2000 \
        -o {{out}}/reconstructions.png
    isa traverse {{out}}/run/model.safetensors --kind samples -o {{out}}/samples.png
    isa traverse {{out}}/run/model.safetensors --codes {{out}}/run/codes.safetensors \
        --kind latent-vs-true -o {{out}}/latent-vs-true.png
    isa prior-sample --tree '1(2)' -n 2000 --seed 1 | isa prior-plot - --tree '1(2)' -o {{out}}/prior-leptokurtic.png
    isa prior-sample --tree '4(2)' -n 2000 --seed 1 | isa prior-plot - --tree '4(2)' -o {{out}}/prior-platykurtic.png
    isa data preview dsprites -o {{out}}/dsprites.png

# Run (or resume) a sweep spec on this machine: `just sweep pipelines/mini.toml 2`.
sweep spec jobs="1":
    isa sweep run {{spec}} -o sweeps --jobs {{jobs}}

# The CPU-sized experiment end to end: sweep, collect, representatives, figures (sweeps/mini/).
mini jobs="1":
    isa sweep run pipelines/mini.toml -o sweeps --jobs {{jobs}}
    isa sweep collect sweeps/mini -o sweeps/mini/results.jsonl
    isa select sweeps/mini/results.jsonl | tee sweeps/mini/representatives.jsonl
    isa plot scatter sweeps/mini/results.jsonl -o sweeps/mini/scatter.png
    isa plot mig-dist sweeps/mini/results.jsonl --beta 1 -o sweeps/mini/mig-dist.png
    isa report sweeps/mini -o sweeps/mini/report.html -q

# Fig. 5a at CPU scale (issue #14): 1 epoch, 8 seeds per method, about 70 minutes on 2 cores;
# results, figures and the statistics land in docs/reproduction/ (see docs/reproduction.md).
fig5a-cpu jobs="2":
    isa sweep run pipelines/fig5a-cpu.toml -o sweeps --jobs {{jobs}}
    isa sweep collect sweeps/fig5a-cpu -o sweeps/fig5a-cpu/results.jsonl
    isa select sweeps/fig5a-cpu/results.jsonl > sweeps/fig5a-cpu/representatives.jsonl
    mkdir -p docs/reproduction
    isa plot scatter sweeps/fig5a-cpu/results.jsonl -o docs/reproduction/fig5a-cpu-scatter.png
    isa plot mig-dist sweeps/fig5a-cpu/results.jsonl -o docs/reproduction/fig5a-cpu-mig-dist.png
    {{python}} -c 'import json, sys; [print(json.loads(l)["method"], json.loads(l)["model"]) for l in open(sys.argv[1])]' \
        sweeps/fig5a-cpu/representatives.jsonl | while read -r method model; do \
        codes="$(dirname "$model")/codes.safetensors"; \
        isa traverse "$model" --codes "$codes" -q -o "docs/reproduction/fig5a-cpu-$method-traversal.png"; \
        isa traverse "$model" --codes "$codes" --kind latent-vs-true -q \
            -o "docs/reproduction/fig5a-cpu-$method-latent-vs-true.png"; done
    cp sweeps/fig5a-cpu/results.jsonl sweeps/fig5a-cpu/representatives.jsonl docs/reproduction/
    {{python}} tools/compare_methods.py docs/reproduction/results.jsonl | tee docs/reproduction/statistics.md

# bf16 against fp32 on quality (issue #12): 6 demo-sized ISA-TCVAE runs, mean ± SE per precision.
precision jobs="2":
    isa sweep run pipelines/precision.toml -o sweeps --jobs {{jobs}}
    isa sweep collect sweeps/precision -o sweeps/precision/results.jsonl
    {{python}} benchmarks/precision_quality.py sweeps/precision/results.jsonl

# With executor=slurm the sweep is submitted; rerun the recipe once `isa sweep status` shows
# every run done (finished runs are skipped) to collect and draw.
# A paper figure from pipelines/NAME.toml: sweep, collect, representatives, figures in sweeps/NAME/.
figure name executor="local" jobs="1":
    isa sweep run pipelines/{{name}}.toml -o sweeps --executor {{executor}} --jobs {{jobs}}
    isa sweep collect sweeps/{{name}} -o sweeps/{{name}}/results.jsonl
    isa select sweeps/{{name}}/results.jsonl > sweeps/{{name}}/representatives.jsonl
    isa plot scatter sweeps/{{name}}/results.jsonl -o sweeps/{{name}}/scatter.png
    isa plot mig-dist sweeps/{{name}}/results.jsonl -o sweeps/{{name}}/mig-dist.png
    {{python}} -c 'import json, sys; [print(json.loads(line)["model"]) for line in open(sys.argv[1])]' \
        sweeps/{{name}}/representatives.jsonl | while read -r model; do \
        isa traverse "$model" --codes "$(dirname "$model")/codes.safetensors" -q \
            -o "$(dirname "$model")/traversal.png"; done
    isa report sweeps/{{name}} -o sweeps/{{name}}/report.html -q

# Fig. 5a: beta-VAE vs ISA-VAE at beta = 1 on dSprites (traversals of the representatives too).
fig5a executor="local": (figure "fig5a-beta1" executor)

# Fig. 5b: the dSprites comparison of Table 1 (FactorVAE in its own sweep).
fig5b executor="local": (figure "fig5b-dsprites" executor) (figure "fig5b-factorvae" executor)

# Fig. 5c: 3D Faces with learned exponents (needs the renders file named in the spec).
fig5c executor="local": (figure "fig5c-faces" executor)
    isa plot exponents sweeps/fig5c-faces/results.jsonl -o sweeps/fig5c-faces/exponents.png

# Fig. 6: Cars3D (needs the folder of car_*.mat files named in the spec).
fig6 executor="local": (figure "fig6-cars3d" executor)

# Fig. 7: histograms of learned exponents (3D Faces).
fig7 executor="local": (figure "fig7-exponents" executor)
    isa plot exponents sweeps/fig7-exponents/results.jsonl -o sweeps/fig7-exponents/exponents.png

# The appendix-B toy figures (figures/): factor analysis, over-complete ICA, prior contours.
toy-figs:
    mkdir -p figures
    isa toy-fa --beta 1 --beta 2 --beta 4 -o figures/toy-fa-rotation.png > figures/toy-fa-rotation.jsonl
    isa toy-fa --experiment prune --beta 1 --beta 2 -o figures/toy-fa-prune.png > figures/toy-fa-prune.jsonl
    isa toy-ica --beta 1 --beta 5 -o figures/toy-ica.png > figures/toy-ica.jsonl
    isa toy-ica --beta 1 --iterations 20000 -o figures/toy-ica-long.png > figures/toy-ica-long.jsonl
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
    {{python}} benchmarks/bench_sweep.py
