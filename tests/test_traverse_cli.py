"""`isa traverse` in process on one tiny model trained on dsprites-mini: real PNG and GIF
files for every kind, and the refusals of bad flag combinations."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageSequence

from tests.conftest import isa_in_process


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A model trained for a few steps, and its codes (so traversals skip the encoding)."""
    folder = tmp_path_factory.mktemp("traverse") / "run"
    from isa_cli.main import main  # a module fixture has no capsys: call the entry point

    for args in (
        ["train", "--data", "dsprites-mini", "--steps", "25", "--batch-size", "64"],
        ["encode", folder / "model.safetensors"],
    ):
        out = ["-o", folder] if args[0] == "train" else []
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in [*args, *out, "-q"]])
        assert done.value.code == 0, args
    return folder


def _traverse(run: Path, capsys, *flags) -> tuple[int, str, str]:
    model, codes = run / "model.safetensors", run / "codes.safetensors"
    return isa_in_process(["traverse", model, "--codes", codes, *flags], capsys)


def test_a_gif_traversal_has_steps_frames_of_one_size(tiny_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "t.gif"
    status, stdout, err = _traverse(tiny_run, capsys, "-o", out, "--steps", "5", "--max-rows", "3")
    assert status == 0, err
    assert stdout.strip() == str(out.resolve())
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.info["loop"] == 0
        sizes = {frame.size for frame in ImageSequence.Iterator(gif)}
        assert gif.n_frames == 5 and len(sizes) == 1
    width, _ = sizes.pop()
    assert width >= 5 * 128  # input, reconstruction and three latents, each 64 px at 2x


@pytest.mark.parametrize(
    ("flags", "min_size"),
    [
        (["--span", "posterior", "--all-latents", "--max-rows", "12"], (900, 1200)),
        (["--kind", "reconstructions", "--count", "6", "--index", "10"], (500, 200)),
        (["--kind", "samples", "--count", "4", "--seed", "3"], (350, 350)),
    ],
)
def test_each_kind_writes_a_png(tiny_run: Path, tmp_path: Path, capsys, flags, min_size):
    out = tmp_path / "figure.png"
    status, stdout, err = _traverse(tiny_run, capsys, "-o", out, *flags)
    assert status == 0, err
    assert stdout.strip() == str(out.resolve())
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kind", "samples", "-o", "s.gif"], "only --kind traversal is animated"),
        (["--kind", "reconstructions", "-o", "r.gif"], "only --kind traversal is animated"),
        (["--quantile", "0.5", "-o", "t.png"], "--quantile must be in (0, 0.5), got 0.5"),
        (["--quantile", "0", "-o", "t.png"], "--quantile must be in (0, 0.5), got 0.0"),
        (["-o", "t.jpg"], "PNG (or GIF for --kind traversal)"),
        (
            ["--kind", "reconstructions", "--index", "4405", "--count", "8", "-o", "r.png"],
            "--index 4405 with --count 8 runs past the data's images (0..4409)",
        ),
    ],
)
def test_bad_combinations_are_refused_in_one_line(
    tiny_run: Path, tmp_path: Path, capsys, flags, message
):
    flags = [str(tmp_path / f) if f.endswith((".gif", ".png", ".jpg")) else f for f in flags]
    status, _, err = _traverse(tiny_run, capsys, *flags)
    assert status == 2, err
    assert err.startswith("isa traverse: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not any(tmp_path.iterdir())  # nothing written
