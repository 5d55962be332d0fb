"""What a model is made of, before any Keras: :class:`ModelConfig` (the ``model:``
keys and the data's shape) and the two layouts of the (190, 32, 32) cube, as in
Mantha et al. (2023), the recurrent (time) axis being wavelength and each step a
spaxel image:

* ``lines``: 19 steps (one per emission line) x (32, 32, 10 channels: the line's
  window bins); the default;
* ``wavelength``: 190 steps x (32, 32, 1), the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linecube.config import schema_enum
from linecube.io.formats import CubeLayout


@dataclass(frozen=True)
class ModelConfig:
    """Architecture keys (config ``model:``) and the data's shape. No defaults here:
    :meth:`from_config` fills them from the schema (the one place they live)."""

    layout: str
    architecture: str
    filters: tuple[int, ...]
    stem_filters: int
    kernel: int
    strides: tuple[int, ...]
    latent_dim: int
    pose_dim: int
    beta: float
    loss_mask: bool
    loss_weighting: str
    loss_sys_floor: float
    encoder_layernorm: bool
    encoder_moments: bool
    kl_free_bits: float
    consistency_weight: float
    mean_cube: bool
    line_balance: float
    moment_weight: float
    summary_weight: float
    summary_nucleus_radius: float
    summary_kinematic_weight: float
    n_lines: int
    window_bins: int
    crop: int

    @property
    def uses_weights(self) -> bool:
        """Whether Eq. 1 takes per-voxel weights (``loss_mask``, or ``loss_weighting``)."""
        return self.loss_mask or self.loss_weighting != "none"

    @property
    def pairs(self) -> bool:
        """Whether training batches hold two views of each galaxy (the consistency term)."""
        return self.consistency_weight > 0

    @classmethod
    def from_config(
        cls,
        model: dict | None = None,
        n_lines: int = CubeLayout.n_lines,
        window_bins: int = CubeLayout.window_bins,
        crop: int = CubeLayout.crop,
    ) -> ModelConfig:
        """From a ``model:`` section, partial or whole (the schema fills the rest),
        and the data's shape (``n_lines``, ``window_bins``, ``crop``: read from
        cubes.h5 by the callers; the values here are the DR17 defaults' shape).
        ``stack`` strides default to 2 per filter block when not given."""
        from linecube.config import with_defaults

        model = dict(model or {})
        m = with_defaults("model", model)
        filters = tuple(int(f) for f in m["filters"])
        strides = tuple(int(s) for s in model["strides"]) if "strides" in model else (2,) * len(filters)
        for key in ("layout", "architecture"):  # the schema's enums (a library call skips the workflow's validation)
            if m[key] not in (allowed := schema_enum("model", key)):
                raise ValueError(f"model.{key} must be one of {allowed}, got {m[key]!r}")
        moments = bool(m["encoder_moments"]) and m["architecture"] == "bottleneck"  # the stem's: stack has none
        if model.get("encoder_moments") and not moments:
            raise ValueError("model.encoder_moments needs model.architecture: bottleneck (the moments are the stem's)")
        if m["architecture"] == "stack" and len(strides) != len(filters):
            raise ValueError(f"model.strides has {len(strides)} entries but model.filters has {len(filters)}")
        return cls(
            layout=m["layout"],
            architecture=m["architecture"],
            filters=filters,
            stem_filters=int(m["stem_filters"]),
            kernel=int(m["kernel"]),
            strides=strides,
            latent_dim=int(m["latent_dim"]),
            pose_dim=int(m["pose_dim"]),
            beta=float(m["beta"]),
            loss_mask=bool(m["loss_mask"]),
            loss_weighting=str(m["loss_weighting"]),
            loss_sys_floor=float(m["loss_sys_floor"]),
            encoder_layernorm=bool(m["encoder_layernorm"]),
            encoder_moments=moments,
            kl_free_bits=float(m["kl_free_bits"]),
            consistency_weight=float(m["consistency_weight"]),
            mean_cube=bool(m["mean_cube"]),
            line_balance=float(m["line_balance"]),
            moment_weight=float(m["moment_weight"]),
            summary_weight=float(m["summary_weight"]),
            summary_nucleus_radius=float(m["summary_nucleus_radius"]),
            summary_kinematic_weight=float(m["summary_kinematic_weight"]),
            n_lines=int(n_lines),
            window_bins=int(window_bins),
            crop=int(crop),
        )

    @property
    def steps(self) -> int:
        return self.n_lines if self.layout == "lines" else self.n_lines * self.window_bins

    @property
    def channels(self) -> int:
        return self.window_bins if self.layout == "lines" else 1

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(time, rows, cols, channels) of one galaxy."""
        return (self.steps, self.crop, self.crop, self.channels)

    @property
    def code_dim(self) -> int:
        """Width of the encoder's output: physical latent plus pose."""
        return self.latent_dim + self.pose_dim


# Layout conversion (numpy; (N, 190, 32, 32) <-> model input)


def to_model_layout(cubes: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """(N, lines*bins, y, x) cubes -> (N, time, y, x, channels) model input."""
    return np.ascontiguousarray(model_layout_view(cubes, cfg))


def model_layout_view(cubes: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """:func:`to_model_layout` without the copy: a strided view where the layout
    allows one (for assigning straight into a batch buffer)."""
    n = cubes.shape[0]
    if cfg.layout == "wavelength":
        return cubes[..., None]
    c = cubes.reshape(n, cfg.n_lines, cfg.window_bins, cfg.crop, cfg.crop)
    return c.transpose(0, 1, 3, 4, 2)


def from_model_layout(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Inverse of :func:`to_model_layout`: back to (N, lines*bins, y, x)."""
    n = x.shape[0]
    if cfg.layout == "wavelength":
        return x[..., 0]
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)).reshape(n, cfg.n_lines * cfg.window_bins, cfg.crop, cfg.crop)
