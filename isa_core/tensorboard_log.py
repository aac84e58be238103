"""Optional TensorBoard mirror of a training run: the metrics.jsonl records as scalars and, now
and then, a latent-traversal image. metrics.jsonl stays the record; this is only for looking.

Needs the `tensorboard` package (the `tensorboard` extra). The traversal image ranks the
latents on a fixed sample of images (encoded afresh each time) and traverses the first of
them over the prior's marginal quantiles, as `isa traverse` does on the whole data set.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isa_core.codes import Codes
from isa_core.data import GroundTruthData
from isa_core.errors import IsaError
from isa_core.models import VAE

__all__ = ["INSTALL_HINT", "TENSORBOARD_DIR", "TensorBoardLog"]

TENSORBOARD_DIR = "tensorboard"  # inside the run folder
INSTALL_HINT = "TensorBoard logging needs the tensorboard package: pip install 'isa[tensorboard]'"
SAMPLE_IMAGES = 1024  # images encoded to rank the latents for each traversal image


class _Sample:
    """The fixed image sample seen as a data set of its own (what the traversal reads)."""

    def __init__(self, data: GroundTruthData, index: torch.Tensor) -> None:
        self.data, self.index = data, index
        self.image_shape = data.image_shape

    def __len__(self) -> int:
        return len(self.index)

    def images(self, indices, device=None) -> torch.Tensor:
        return self.data.images(self.index[torch.as_tensor(indices)], device)


class TensorBoardLog:
    """Writes a run's scalars and traversal images to ``folder/tensorboard``."""

    def __init__(self, folder: Path | str, data: GroundTruthData, seed: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise IsaError(INSTALL_HINT) from None
        self.writer = SummaryWriter(log_dir=str(Path(folder) / TENSORBOARD_DIR))
        self.data = data
        generator = torch.Generator().manual_seed(seed)
        count = min(SAMPLE_IMAGES, len(data))
        self.sample = data.sample_indices(count, generator)

    def scalars(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record: every number as ``train/NAME``, exponents as ``prior/pI``."""
        step = int(record["step"])
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"train/{name}", value, step)
        for i, value in enumerate(record.get("exponents") or []):
            self.writer.add_scalar(f"prior/p{i}", value, step)
        self.writer.flush()

    @torch.no_grad()
    def traversal_image(self, step: int, model: VAE) -> None:
        """The `isa traverse` figure of ``model`` now, on the fixed sample: image ``traversal``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        from isa_core.plots import latent_traversal
        from isa_core.traverse import rank_latents, traversal

        cpu_model = copy.deepcopy(model).float().cpu().eval()
        x = self.data.images(self.sample)
        mean, logvar = cpu_model.encode(x)
        factors = self.data.index_to_factors(self.sample).numpy()
        metadata = {
            "factor_names": list(self.data.factor_names),
            "factor_sizes": list(self.data.factor_sizes),
        }
        codes = Codes(mean.numpy(), logvar.numpy(), factors, None, metadata)
        ranking = rank_latents(codes)
        sample = _Sample(self.data, self.sample)
        # Early in training no latent may be active yet: show the top rows whatever they are.
        picture = traversal(cpu_model, codes, sample, ranking, include_inactive=True)
        canvas = FigureCanvasAgg(latent_traversal(picture))
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        self.writer.add_image("traversal", rgba[..., :3].copy(), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
