"""`isa train --log tensorboard`: the scalars and traversal images, read back with TensorBoard's
own reader; without the package, one line saying how to install it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from isa_core.checkpoint import METRICS_FILE
from isa_core.tensorboard_log import TENSORBOARD_DIR
from tests.conftest import isa_in_process as isa

TRAIN = ["train", "--data", "dsprites-mini", "--batch-size", "32", "--log-every", "2", "-q"]


def read_events(folder: Path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_the_event_file_holds_the_metrics_and_traversal_images(tmp_path: Path, capsys) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    args = [*TRAIN, "--steps", "4", "--log", "tensorboard", "--image-every", "2", "-o", out]
    code, _, err = isa(args, capsys)
    assert code == 0, err
    assert list((out / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    events = read_events(out / TENSORBOARD_DIR)
    records = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in records] == [2, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    assert [e.value for e in events.Scalars("prior/p0")] == pytest.approx([2.1, 2.1])
    assert {"train/logpx", "train/kl", "train/images_per_s"} <= set(events.Tags()["scalars"])
    images = events.Images("traversal")
    assert [image.step for image in images] == [2, 4]
    assert images[0].width > 200 and images[0].height > 100
    assert images[0].encoded_image_string.startswith(b"\x89PNG")

    # A resumed run may switch the mirror off (or on); metrics.jsonl goes on either way.
    code, _, err = isa(["train", "--resume", "-o", out, "--steps", "6", "-q"], capsys)
    assert code == 0, err
    assert len((out / METRICS_FILE).read_text().splitlines()) == 3


def test_without_tensorboard_one_line_says_how_to_install(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name)
    )
    out = tmp_path / "run"
    code, _, err = isa([*TRAIN, "--steps", "2", "--log", "tensorboard", "-o", out], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0, err
    assert "pip install 'isa[tensorboard]'" in err
    assert not out.exists()  # refused before any folder


def test_an_unknown_log_sink_exits_2(tmp_path: Path, capsys) -> None:
    code, _, err = isa([*TRAIN, "--steps", "2", "--log", "wandb", "-o", tmp_path / "r"], capsys)
    assert code == 2 and "--log" in err
