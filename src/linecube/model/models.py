"""ConvLSTM2D autoencoder (AE) and variational autoencoder (VAE), Keras 3, any backend.

The recurrent (time) axis is wavelength and each time step is a spaxel image, as
in Mantha et al. (2023). Two layouts of the (190, 32, 32) cube:

* ``lines``: 19 steps (one per emission line) x (32, 32, 10 channels: the line's
  window bins); the default;
* ``wavelength``: 190 steps x (32, 32, 1), the paper's.

Two architectures (``model.architecture``):

* ``bottleneck`` (the default): space-to-depth (2x2 spaxels -> channels) and a
  strided convolution per step bring each image to 1/4 of the crop, where
  ConvLSTM2D layers (tanh) run over the steps; the encoder's last one returns its
  final state, a Dense layer gives the latent. The decoder conditions every step
  on the latent and the step (the latent's map repeated over the steps with a
  positional code appended), runs ConvLSTM2D layers at the same 1/4 resolution,
  then a transposed convolution, a linear convolution and depth-to-space back to
  the crop, plus a learned mean cube initialised to the training galaxies' median
  (so training starts at the median cube's loss and learns what differs). The
  recurrence runs at 1/16 of the crop's spaxels: 4-5x cheaper per step than the
  paper's full-resolution stack for the same latent.
* ``stack`` (the paper's; ``config/paper.yaml``): ConvLSTM2D(tanh, strided) +
  LayerNormalization blocks in the encoder, ConvLSTM2D + LayerNormalization + 2x
  upsampling blocks in the decoder, and a final ConvLSTM2D with ELU output.

The latent has ``latent_dim`` physical dimensions and, optionally, ``pose_dim``
more that only the decoder reads: with the consistency term (below) the physical
part learns to ignore orientation, position and noise, which the pose part keeps
for the reconstruction. Downstream (latents.h5, neighbours, UMAP) uses the
physical part only (AE: z; VAE: mu).

Loss: Eq. 1 of the paper, per galaxy the sum over spaxels of the mean absolute
error along wavelength plus the sum over wavelength channels of the mean
absolute error over the image, averaged over the batch; optionally only over
usable voxels or noise-weighted, and with each emission line's window weighted
(``line_balance``: :func:`line_weights`, stored in the model). VAE: + beta *
KL(N(mu, sigma) || N(0, 1)), with optional free bits per dimension.
Consistency (``consistency_weight`` > 0; batches then hold two augmented views
of each galaxy in adjacent rows): the two views' latents pulled together
relative to the spread of the galaxies (spender's similarity idea, Liang et al.
2023, AJ 166, 75), in VICReg's form (invariance + variance + decorrelation,
Bardes et al. 2022; :func:`consistency`), times the weight and the batch's
(constant) Eq. 1 loss, so the weight is a fraction of the reconstruction term
whatever the flux unit.
Summary head (``summary_weight`` > 0): a Dense layer on the physical latent
predicts summaries of the input cube itself (:func:`cube_summaries`: line ratios
over the image and within the nucleus, H-alpha's velocity spread, widths and
shape), batch-standardised; their mean
squared error (:func:`summary_loss`) times the weight and Eq. 1 joins the loss.
The head is trained and saved with the model and read by nothing downstream.

Everything in the loss is ``keras.ops``; training goes through Keras's own
``train_step`` of the backend (TensorFlow, PyTorch or JAX) via ``compute_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

from linecube.io.formats import CubeLayout

LAYOUTS = ("lines", "wavelength")
#: index of H-alpha in the packaged 19-line list (the summaries' reference line)
DEFAULT_REF_LINE = 15
ARCHITECTURES = ("bottleneck", "stack")


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
    kl_free_bits: float
    consistency_weight: float
    mean_cube: bool
    line_balance: float
    moment_weight: float
    summary_weight: float
    summary_nucleus_radius: float
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
        if m["layout"] not in LAYOUTS:
            raise ValueError(f"model.layout must be one of {LAYOUTS}, got {m['layout']!r}")
        if m["architecture"] not in ARCHITECTURES:
            raise ValueError(f"model.architecture must be one of {ARCHITECTURES}, got {m['architecture']!r}")
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
            kl_free_bits=float(m["kl_free_bits"]),
            consistency_weight=float(m["consistency_weight"]),
            mean_cube=bool(m["mean_cube"]),
            line_balance=float(m["line_balance"]),
            moment_weight=float(m["moment_weight"]),
            summary_weight=float(m["summary_weight"]),
            summary_nucleus_radius=float(m["summary_nucleus_radius"]),
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


# --------------------------------------------------------------------------
# Layout conversion (numpy; (N, 190, 32, 32) <-> model input)
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Custom layers (registered: .keras files load in safe mode, no custom_objects)
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="linecube")
class RepeatTime(layers.Layer):
    """(B, h, w, f) -> (B, steps, h, w, f + p): the map repeated over the time
    steps, with a fixed positional code of the step appended as p channels
    (one-hot for up to 32 steps, else 16 sinusoids)."""

    def __init__(self, steps: int, **kwargs):
        super().__init__(**kwargs)
        self.steps = int(steps)
        if self.steps <= 32:
            code = np.eye(self.steps, dtype="float32")
        else:
            t = np.arange(self.steps, dtype="float32")[:, None]
            freqs = (2.0 ** np.arange(8, dtype="float32"))[None] * np.pi / self.steps
            code = np.concatenate([np.sin(t * freqs), np.cos(t * freqs)], axis=1)
        self._code = code

    def call(self, x):
        b, h, w = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        rep = ops.repeat(ops.expand_dims(x, 1), self.steps, axis=1)
        code = ops.cast(ops.convert_to_tensor(self._code), x.dtype)
        code = ops.broadcast_to(code[None, :, None, None, :], (b, self.steps, h, w, self._code.shape[1]))
        return ops.concatenate([rep, code], axis=-1)

    def compute_output_shape(self, input_shape):
        b, h, w, f = input_shape
        return (b, self.steps, h, w, f + self._code.shape[1])

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


class _Blocks(layers.Layer):
    """A reshape of b x b spaxel blocks (``block`` = b), per time step."""

    def __init__(self, block: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block = int(block)

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="linecube")
class SpaceToDepth(_Blocks):
    """(B, T, H, W, C) -> (B, T, H/b, W/b, b*b*C): each b x b block of spaxels
    becomes channels (H and W must be multiples of b)."""

    def call(self, x):
        t, h, w, c = x.shape[1:]
        b = self.block
        x = ops.reshape(x, (-1, t, h // b, b, w // b, b, c))
        x = ops.transpose(x, (0, 1, 2, 4, 3, 5, 6))
        return ops.reshape(x, (-1, t, h // b, w // b, b * b * c))

    def compute_output_shape(self, input_shape):
        n, t, h, w, c = input_shape
        b = self.block
        return (n, t, h // b, w // b, b * b * c)


@keras.saving.register_keras_serializable(package="linecube")
class DepthToSpace(_Blocks):
    """Inverse of :class:`SpaceToDepth`: (B, T, h, w, b*b*C) -> (B, T, h*b, w*b, C)."""

    def call(self, x):
        t, h, w, c = x.shape[1:]
        b = self.block
        x = ops.reshape(x, (-1, t, h, w, b, b, c // (b * b)))
        x = ops.transpose(x, (0, 1, 2, 4, 3, 5, 6))
        return ops.reshape(x, (-1, t, h * b, w * b, c // (b * b)))

    def compute_output_shape(self, input_shape):
        n, t, h, w, c = input_shape
        b = self.block
        return (n, t, h * b, w * b, c // (b * b))


@keras.saving.register_keras_serializable(package="linecube")
class MeanCube(layers.Layer):
    """x + m: a learned cube (T, H, W, C) added to the decoder's output, set to the
    training galaxies' median (in the model's units) before training starts."""

    def build(self, input_shape):
        self.mean = self.add_weight(shape=tuple(input_shape[1:]), initializer="zeros", name="mean")
        self.built = True

    def call(self, x):
        return x + ops.cast(self.mean, x.dtype)


@keras.saving.register_keras_serializable(package="linecube")
class SoftClip(layers.Layer):
    """limit * tanh(x / limit): keeps the VAE log-variance in (-limit, limit) with a
    non-zero gradient everywhere (Adagrad's first, sign-like steps otherwise push
    it to exp overflow)."""

    def __init__(self, limit: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.limit = float(limit)

    def call(self, x):
        return self.limit * ops.tanh(x / self.limit)

    def get_config(self):
        return {**super().get_config(), "limit": self.limit}


@keras.saving.register_keras_serializable(package="linecube")
class Sampling(layers.Layer):
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, 1) from a seeded generator."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs):
        mu, logvar = inputs
        eps = keras.random.normal(ops.shape(mu), dtype=mu.dtype, seed=self.seed_generator)
        return mu + ops.exp(0.5 * logvar) * eps

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="linecube")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning rate (Smith & Topin 2019): cosine rise from lr_max/div to
    lr_max over the first ``warmup`` of ``total_steps``, cosine decay to
    lr_max/final_div afterwards; everything times ``factor`` (lowered by the
    divergence guard of :mod:`linecube.model.train`)."""

    def __init__(self, lr_max, total_steps, warmup=0.3, div=25.0, final_div=1e3, factor=1.0):
        self.lr_max, self.total, self.warmup, self.div, self.final_div = lr_max, total_steps, warmup, div, final_div
        self.factor = float(factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        up = max(1.0, self.warmup * self.total)
        down = max(1.0, self.total - up)
        lo, hi, end = self.lr_max / self.div, self.lr_max, self.lr_max / self.final_div
        rise = lo + (hi - lo) * 0.5 * (1.0 - ops.cos(np.pi * ops.clip(step / up, 0.0, 1.0)))
        fall = end + (hi - end) * 0.5 * (1.0 + ops.cos(np.pi * ops.clip((step - up) / down, 0.0, 1.0)))
        return self.factor * ops.where(step < up, rise, fall)

    def get_config(self):
        return {
            "lr_max": self.lr_max,
            "total_steps": self.total,
            "warmup": self.warmup,
            "div": self.div,
            "final_div": self.final_div,
            "factor": self.factor,
        }


@keras.saving.register_keras_serializable(package="linecube")
class ConstantRate(keras.optimizers.schedules.LearningRateSchedule):
    """A constant learning rate times ``factor`` (lowered by the divergence guard)."""

    def __init__(self, lr, factor=1.0):
        self.lr, self.factor = float(lr), float(factor)

    def __call__(self, step):
        return ops.cast(self.lr * self.factor, "float32") + 0.0 * ops.cast(step, "float32")

    def get_config(self):
        return {"lr": self.lr, "factor": self.factor}


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def _code_layers(x, cfg: ModelConfig, variational: bool):
    """The encoder's head: Dense to the code (AE) or to mu and a soft-clipped log-variance (VAE)."""
    x = layers.Flatten(name="flatten")(x)
    if variational:
        mu = layers.Dense(cfg.code_dim, name="z_mean")(x)
        logvar = SoftClip(10.0, name="z_log_var")(layers.Dense(cfg.code_dim, name="z_log_var_raw")(x))
        return [mu, logvar]
    return layers.Dense(cfg.code_dim, name="z")(x)


def _quarter(cfg: ModelConfig) -> int:
    """The bottleneck architecture's side: the crop padded to a multiple of 4, over 4."""
    return -(-cfg.crop // 4)


def build_encoder(cfg: ModelConfig, variational: bool, name: str = "encoder") -> keras.Model:
    """Functional encoder: (time, y, x, c) -> code (AE) or [mu, logvar] (VAE)."""
    inp = keras.Input(cfg.input_shape, name="cube")
    x = inp
    if cfg.architecture == "bottleneck":
        pad = 4 * _quarter(cfg) - cfg.crop
        if pad:
            x = layers.TimeDistributed(layers.ZeroPadding2D(((0, pad), (0, pad))), name="pad")(x)
        x = SpaceToDepth(2, name="space_to_depth")(x)
        x = layers.TimeDistributed(
            layers.Conv2D(cfg.stem_filters, cfg.kernel, strides=2, padding="same", activation="gelu"), name="stem"
        )(x)
        for i, f in enumerate(cfg.filters):
            last = i == len(cfg.filters) - 1
            x = layers.ConvLSTM2D(
                f, cfg.kernel, padding="same", activation="tanh", return_sequences=not last, name=f"convlstm_{i + 1}"
            )(x)
            if cfg.encoder_layernorm:
                x = layers.LayerNormalization(name=f"layernorm_{i + 1}")(x)
        return keras.Model(inp, _code_layers(x, cfg, variational), name=name)
    for i, (f, s) in enumerate(zip(cfg.filters, cfg.strides)):
        last = i == len(cfg.filters) - 1
        x = layers.ConvLSTM2D(
            f, cfg.kernel, strides=s, padding="same", activation="tanh", return_sequences=not last, name=f"convlstm_{i + 1}"
        )(x)
        if cfg.encoder_layernorm:
            x = layers.LayerNormalization(name=f"layernorm_{i + 1}")(x)
    return keras.Model(inp, _code_layers(x, cfg, variational), name=name)


def _stack_bottleneck(cfg: ModelConfig) -> tuple[int, int]:
    side = cfg.crop
    for s in cfg.strides:
        side = -(-side // s)
    return side, cfg.filters[-1]


def build_decoder(cfg: ModelConfig, name: str = "decoder") -> keras.Model:
    """Functional decoder: code -> (time, y, x, c) reconstruction."""
    z = keras.Input((cfg.code_dim,), name="z")
    if cfg.architecture == "bottleneck":
        side, f0 = _quarter(cfg), cfg.filters[-1]
        x = layers.Dense(side * side * f0, name="expand")(z)
        x = layers.Reshape((side, side, f0), name="to_map")(x)
        x = RepeatTime(cfg.steps, name="repeat_time")(x)
        for i, f in enumerate(reversed(cfg.filters)):
            x = layers.ConvLSTM2D(
                f, cfg.kernel, padding="same", activation="tanh", return_sequences=True, name=f"convlstm_{i + 1}"
            )(x)
        x = layers.TimeDistributed(
            layers.Conv2DTranspose(cfg.stem_filters, cfg.kernel, strides=2, padding="same", activation="gelu"), name="unstem"
        )(x)
        x = layers.TimeDistributed(
            layers.Conv2D(
                4 * cfg.channels, cfg.kernel, padding="same", kernel_initializer="zeros" if cfg.mean_cube else "glorot_uniform"
            ),
            name="to_pixels",
        )(x)
        out = DepthToSpace(2, name="depth_to_space", dtype="float32")(x)
        if out.shape[2] != cfg.crop:
            cut = out.shape[2] - cfg.crop
            out = layers.TimeDistributed(layers.Cropping2D(((0, cut), (0, cut))), name="crop")(out)
        if cfg.mean_cube:
            out = MeanCube(name="mean_cube", dtype="float32")(out)
        return keras.Model(z, out, name=name)
    side, f0 = _stack_bottleneck(cfg)
    x = layers.Dense(side * side * f0, name="expand")(z)
    x = layers.Reshape((side, side, f0), name="to_map")(x)
    x = RepeatTime(cfg.steps, name="repeat_time")(x)
    for i, (f, s) in enumerate(zip(reversed(cfg.filters), reversed(cfg.strides))):
        x = layers.ConvLSTM2D(f, cfg.kernel, padding="same", activation="tanh", return_sequences=True, name=f"convlstm_{i + 1}")(
            x
        )
        x = layers.LayerNormalization(name=f"layernorm_{i + 1}")(x)
        if s > 1:
            x = layers.TimeDistributed(layers.UpSampling2D(s), name=f"upsample_{i + 1}")(x)
    out = layers.ConvLSTM2D(
        cfg.channels, cfg.kernel, padding="same", activation="elu", return_sequences=True, dtype="float32", name="output"
    )(x)
    if out.shape[2] != cfg.crop:
        out = layers.TimeDistributed(
            layers.Cropping2D(((0, out.shape[2] - cfg.crop), (0, out.shape[3] - cfg.crop))), name="crop"
        )(out)
    if cfg.mean_cube:
        out = MeanCube(name="mean_cube", dtype="float32")(out)
    return keras.Model(z, out, name=name)


# --------------------------------------------------------------------------
# Loss (Eq. 1), KL and consistency
# --------------------------------------------------------------------------


def eq1_per_galaxy(x, xr, weights=None, step_weights=None):
    """The paper's Eq. 1 of each galaxy, (B,), for (B, T, H, W, C) tensors.

    Wavelength is the (T, C) pair of axes. Per galaxy: sum over spaxels (H, W)
    of the MAE along wavelength, plus sum over wavelength channels (T, C) of the
    MAE over the image. ``weights`` (same shape, >= 0; 0 = masked) multiply each
    voxel's absolute error, and each mean becomes one over the voxels of nonzero
    weight (an all-masked spaxel or channel contributes 0): with 0/1 weights
    (``loss_mask``) a mean over usable voxels, with ivar weights
    (:func:`linecube.model.train.ivar_weights`, mean 1 per galaxy) a noise-weighted one.
    ``step_weights`` (broadcastable to (1, T, 1, 1, 1), > 0; the line weights of
    :func:`line_weights` per step) multiply each step's absolute errors, the means
    staying over the same voxels.
    """
    d = ops.abs(ops.cast(x, "float32") - ops.cast(xr, "float32"))
    if step_weights is not None:
        d = d * ops.cast(step_weights, "float32")
    if weights is None:
        per_spaxel = ops.mean(d, axis=(1, 4))
        per_channel = ops.mean(d, axis=(2, 3))
    else:
        w = ops.cast(weights, "float32")
        used = ops.cast(w > 0, "float32")
        d = d * w
        per_spaxel = ops.sum(d, axis=(1, 4)) / ops.maximum(ops.sum(used, axis=(1, 4)), 1.0)
        per_channel = ops.sum(d, axis=(2, 3)) / ops.maximum(ops.sum(used, axis=(2, 3)), 1.0)
    return ops.sum(per_spaxel, axis=(1, 2)) + ops.sum(per_channel, axis=(1, 2))


def line_weights(median_cube: np.ndarray, n_lines: int, power: float, cap: float = 10.0) -> list[float]:
    """Per-line weights of Eq. 1 (``model.line_balance``): line l weighs
    (S_max / S_l) ** power, S_l the summed |flux| of the training galaxies' median
    cube over line l's window (model units; S_max: the brightest line, H-alpha),
    capped at ``cap`` (lines at the noise level), then scaled to mean 1 so the loss
    keeps its size. ``median_cube``: (wavelength, y, x), n_lines windows along
    wavelength; ``power`` 0 gives all ones."""
    s = np.abs(np.asarray(median_cube, dtype=np.float64)).reshape(n_lines, -1).sum(axis=1)
    s = np.maximum(s, s.max() * 1e-12 + 1e-30)
    w = np.minimum((s.max() / s) ** float(power), cap)
    return [float(v) for v in w / w.mean()]


def moment_per_galaxy(x, xr, n_lines: int, bins: int, weights=None, step_weights=None):
    """The kinematic term of each galaxy, (B,), for (B, T, H, W, C) tensors of
    either layout (``lines``: T = n_lines, C = bins; ``wavelength``: T = n_lines *
    bins, C = 1). Per spaxel and line, the error of the window's first moment,
    |sum_k (k - centre) (x_k - xr_k)| / sum_k |k - centre| (k the window's bins;
    flux x bins, over bins: a flux), averaged over lines and summed over spaxels
    (Eq. 1's per-spaxel scale). ``weights`` > 0 mark usable voxels (others count
    0); ``step_weights`` (1, T, 1, 1, 1) weigh each line as in Eq. 1."""
    d = ops.cast(x, "float32") - ops.cast(xr, "float32")
    if step_weights is not None:
        d = d * ops.cast(step_weights, "float32")
    if weights is not None:
        d = d * ops.cast(ops.cast(weights, "float32") > 0, "float32")
    k = np.arange(bins, dtype=np.float32) - (bins - 1) / 2.0
    k = k / np.abs(k).sum()
    if ops.shape(d)[-1] == bins:  # lines layout: (B, L, H, W, bins)
        m1 = ops.sum(d * ops.convert_to_tensor(k.reshape(1, 1, 1, 1, bins)), axis=-1)  # (B, L, H, W)
    else:  # wavelength layout: (B, L * bins, H, W, 1)
        h, w = ops.shape(d)[2], ops.shape(d)[3]
        d = ops.reshape(d, (-1, n_lines, bins, h, w))
        m1 = ops.sum(d * ops.convert_to_tensor(k.reshape(1, 1, bins, 1, 1)), axis=2)
    return ops.sum(ops.mean(ops.abs(m1), axis=1), axis=(1, 2))


def _windows(x, n_lines: int, bins: int):
    """(B, L, bins, H, W) view of a (B, T, H, W, C) tensor of either layout."""
    x = ops.cast(x, "float32")
    h, w = ops.shape(x)[2], ops.shape(x)[3]
    if ops.shape(x)[-1] == bins and ops.shape(x)[1] == n_lines:  # lines layout: (B, L, H, W, bins)
        return ops.transpose(x, (0, 1, 4, 2, 3))
    return ops.reshape(x, (-1, n_lines, bins, h, w))  # wavelength layout: (B, L * bins, H, W, 1)


def _weighted_mean(v, wgt, axes):
    return ops.sum(v * wgt, axis=axes) / ops.maximum(ops.sum(wgt, axis=axes), 1e-12)


#: names of the columns of :func:`cube_summaries` after the line ratios
SUMMARY_TAIL = (
    "ref_centroid_spread",
    "ref_width_integrated",
    "ref_width_spaxel",
    "ref_rms_radius",
    "ref_concentration",
    "ref_ellipticity",
)


def n_summaries(n_lines: int, nucleus_radius: float = 0.0) -> int:
    """Columns of :func:`cube_summaries`: the line ratios, the nuclear ones when
    ``nucleus_radius`` > 0, and :data:`SUMMARY_TAIL`."""
    return (n_lines - 1) * (2 if nucleus_radius > 0 else 1) + len(SUMMARY_TAIL)


def cube_summaries(x, n_lines: int, bins: int, ref_line: int, nucleus_radius: float = 0.0):
    """Summary statistics of each galaxy, (B, :func:`n_summaries`), from the model's input
    itself (either layout, model units; nothing from a truth table): the targets of the
    summary head (``model.summary_weight``). Windows are continuum-subtracted (the mean
    of their two outermost bins per side). Columns: asinh(10 F_line / F_ref) for every
    line but the reference (H-alpha), F the window flux summed over the image; with
    ``nucleus_radius`` > 0 (spaxels) the same ratios of the nucleus, F summed within
    that radius of H-alpha's flux-weighted centre (3 spaxels = 1.5 arcsec at MaNGA's
    0.5-arcsec spaxels: the 3-arcsec aperture of the SDSS fibre spectra that BPT
    classes are conventionally assigned from); then, of the reference line (see
    :data:`SUMMARY_TAIL`): the flux-weighted spread over
    spaxels of the per-spaxel centroid (bins; the velocity field's amplitude), the
    second-moment width of the galaxy's summed spectrum and the flux-weighted mean of
    the per-spaxel widths (bins; rotation broadens the first, not the second), the
    flux-weighted rms radius (spaxels), the share of the flux within 3 spaxels of the
    image centre and the ellipticity of the flux's second moments (inclination). All
    are unchanged by the training augmentation's flips and rotations; all but the
    concentration also by its shifts (up to the crop's edge)."""
    f = _windows(x, n_lines, bins)  # (B, L, K, H, W)
    cont = (f[:, :, 0] + f[:, :, 1] + f[:, :, bins - 2] + f[:, :, bins - 1]) / 4.0
    f = f - cont[:, :, None]
    keep = [i for i in range(n_lines) if i != ref_line]

    def line_ratios(flux):  # (B, L) -> (B, L - 1): asinh(10 F_line / F_ref)
        ref = ops.maximum(flux[:, ref_line : ref_line + 1], 1e-3)
        return ops.arcsinh(10.0 * ops.take(flux, keep, axis=1) / ref)

    ratios = line_ratios(ops.sum(f, axis=(2, 3, 4)))
    fr = ops.relu(f[:, ref_line])  # (B, K, H, W)
    k = ops.convert_to_tensor(np.arange(bins, dtype=np.float32).reshape(1, bins, 1, 1))
    sflux = ops.sum(fr, axis=1)  # (B, H, W)
    c = ops.sum(fr * k, axis=1) / ops.maximum(sflux, 1e-6)
    sw = ops.sqrt(ops.maximum(ops.sum(fr * ops.square(k - c[:, None]), axis=1) / ops.maximum(sflux, 1e-6), 0.0))
    wgt = sflux
    cm = _weighted_mean(c, wgt, (1, 2))
    spread = ops.sqrt(ops.maximum(_weighted_mean(ops.square(c - cm[:, None, None]), wgt, (1, 2)), 0.0))
    spec = ops.sum(fr, axis=(2, 3))  # (B, K)
    kk = k[:, :, 0, 0]
    mu = ops.sum(spec * kk, axis=1) / ops.maximum(ops.sum(spec, axis=1), 1e-6)
    width = ops.sqrt(
        ops.maximum(ops.sum(spec * ops.square(kk - mu[:, None]), axis=1) / ops.maximum(ops.sum(spec, axis=1), 1e-6), 0.0)
    )
    width_sp = _weighted_mean(sw, wgt, (1, 2))
    h, w = int(ops.shape(x)[2]), int(ops.shape(x)[3])
    gy, gx = np.meshgrid(
        np.arange(h, dtype=np.float32) - (h - 1) / 2.0, np.arange(w, dtype=np.float32) - (w - 1) / 2.0, indexing="ij"
    )
    yy, xx = ops.convert_to_tensor(gy[None]), ops.convert_to_tensor(gx[None])
    my, mx = _weighted_mean(yy, wgt, (1, 2)), _weighted_mean(xx, wgt, (1, 2))
    dy, dx = yy - my[:, None, None], xx - mx[:, None, None]
    iyy, ixx, ixy = (_weighted_mean(v, wgt, (1, 2)) for v in (dy * dy, dx * dx, dy * dx))
    rms = ops.sqrt(ops.maximum(iyy + ixx, 0.0))
    ell = ops.sqrt(ops.square(ixx - iyy) + 4.0 * ops.square(ixy)) / ops.maximum(ixx + iyy, 1e-6)
    core = ops.convert_to_tensor((np.hypot(gy, gx) < 3.0).astype(np.float32)[None])
    conc = _weighted_mean(core, wgt, (1, 2))
    tail = ops.stack([spread, width, width_sp, rms, conc, ell], axis=1)
    if nucleus_radius <= 0:
        return ops.concatenate([ratios, tail], axis=1)
    r2 = ops.square(yy - my[:, None, None]) + ops.square(xx - mx[:, None, None])  # (B, H, W)
    aperture = ops.cast(r2 < float(nucleus_radius) ** 2, "float32")[:, None]  # (B, 1, H, W)
    nuc_ratios = line_ratios(ops.sum(ops.sum(f, axis=2) * aperture, axis=(2, 3)))
    return ops.concatenate([ratios, nuc_ratios, tail], axis=1)


def summary_loss(pred, target):
    """Mean squared error of the summary head's prediction (B, F) against the
    batch-standardised summaries (B, F) (no gradient through the targets); 0 for
    batches of fewer than four galaxies."""
    t = ops.stop_gradient(ops.cast(target, "float32"))
    t = (t - ops.mean(t, axis=0, keepdims=True)) / (ops.std(t, axis=0, keepdims=True) + 1e-3)
    n = ops.cast(ops.shape(t)[0], "float32")
    return ops.where(n >= 4.0, ops.mean(ops.square(ops.cast(pred, "float32") - t)), 0.0)


def eq1_loss(x, xr, weights=None, step_weights=None):
    """Eq. 1 averaged over the batch (:func:`eq1_per_galaxy`)."""
    return ops.mean(eq1_per_galaxy(x, xr, weights, step_weights))


def kl_divergence(mu, logvar, free_bits: float = 0.0):
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over latent dimensions, batch mean.

    ``free_bits`` > 0 (nats per latent dimension): each dimension's batch-mean KL
    counts at least that much, so the encoder is not pushed all the way to the
    prior (Kingma et al. 2016, "Improved variational inference with inverse
    autoregressive flow", the "free bits" of their Sec. C.8)."""
    mu = ops.cast(mu, "float32")
    logvar = ops.cast(logvar, "float32")
    per_dim = -0.5 * (1.0 + logvar - ops.square(mu) - ops.exp(logvar))
    if free_bits > 0:
        return ops.sum(ops.maximum(ops.mean(per_dim, axis=0), free_bits))
    return ops.mean(ops.sum(per_dim, axis=1))


def consistency(z):
    """The consistency term of latents (2n, d) of n galaxies' two views (rows 2i
    and 2i + 1), VICReg's three parts (Bardes, Ponce & LeCun 2022): the mean
    squared difference between a galaxy's views per dimension (invariance), the
    mean shortfall of each dimension's standard deviation over the batch below 1
    (variance: the latent cannot shrink to make views agree), and the squared
    off-diagonal covariances over d (decorrelation: every dimension carries its
    own information, so Euclidean distances weigh them alike). About 2 when the
    views ignore which galaxy they show; 0 for fewer than two galaxies."""
    z = ops.cast(z, "float32")
    a, b = z[0::2], z[1::2]
    inv = ops.mean(ops.square(a - b))
    zc = z - ops.mean(z, axis=0, keepdims=True)
    var = ops.mean(ops.square(zc), axis=0)
    shortfall = ops.mean(ops.relu(1.0 - ops.sqrt(var + 1e-4)))
    nf = ops.cast(ops.shape(z)[0], "float32")
    d = ops.cast(ops.shape(z)[1], "float32")
    cov = ops.matmul(ops.transpose(zc), zc) / ops.maximum(nf - 1.0, 1.0)
    off = (ops.sum(ops.square(cov)) - ops.sum(ops.square(ops.diagonal(cov)))) / d
    return ops.where(nf >= 4.0, inv + shortfall + off, 0.0)


def per_replica(loss):
    """The loss one replica contributes under TensorFlow's ``tf.distribute`` (its
    gradients are summed over replicas); unchanged on one device and on other backends."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        n = tf.distribute.get_strategy().num_replicas_in_sync
        if n > 1:
            return loss / float(n)
    return loss


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


class LastValue(keras.metrics.Metric):
    """The value of the last update (not a mean): the batch's own loss, which the
    divergence guard of :mod:`linecube.model.train` reads after each step."""

    def __init__(self, name="batch_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, value):
        self.value.assign(ops.cast(value, self.value.dtype))

    def result(self):
        return ops.convert_to_tensor(self.value)


@keras.saving.register_keras_serializable(package="linecube")
class CubeAutoencoder(keras.Model):
    """Thin subclassed model owning a functional encoder and decoder.

    ``variational=False``: AE, code = encoder(x). ``True``: VAE, the code used
    downstream is mu; training samples z with :class:`Sampling` and adds
    beta * KL. Inputs are cubes in the model layout, or dicts ``{"x": cube, "w":
    voxel weights}`` (``w`` read when ``loss_mask``). ``call`` returns a dict
    (reconstruction and code); ``reconstruct`` the reconstruction; ``encode`` the
    physical latent (the first ``latent_dim`` of the code). Losses are computed in :meth:`compute_loss`, which Keras's own
    train step of every backend calls.
    """

    def __init__(
        self,
        encoder,
        decoder,
        variational: bool = False,
        beta: float = 1.0,
        loss_mask: bool = False,
        seed: int = 0,
        kl_free_bits: float = 0.0,
        latent_dim: int | None = None,
        consistency_weight: float = 0.0,
        trained_backend: str | None = None,
        line_weights: list[float] | None = None,
        moment_weight: float = 0.0,
        moment_shape: tuple[int, int] | None = None,
        summary_weight: float = 0.0,
        summary_shape: tuple[int, int, int] | None = None,
        summary_nucleus_radius: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        #: the Keras backend that trained the weights (recorded in the .keras file;
        #: the model loads and scores on any backend)
        self.trained_backend = trained_backend or keras.backend.backend()
        self.encoder = encoder
        self.decoder = decoder
        self.variational = bool(variational)
        self.beta = float(beta)
        self.kl_free_bits = float(kl_free_bits)
        self.latent_dim = int(latent_dim) if latent_dim is not None else int(decoder.input_shape[-1])
        self.consistency_weight = float(consistency_weight)
        #: Eq. 1's weight of each emission line (:func:`line_weights`), or None (all 1)
        self.line_weights = [float(v) for v in line_weights] if line_weights else None
        self._step_weights = None  # (1, T, 1, 1, 1): each step's line weight
        #: weight of the kinematic term (:func:`moment_per_galaxy`) and its (n_lines, bins)
        self.moment_weight = float(moment_weight)
        self.moment_shape = tuple(int(v) for v in moment_shape) if moment_shape else None
        if self.moment_weight > 0 and self.moment_shape is None:
            raise ValueError("moment_weight > 0 needs moment_shape (n_lines, window bins)")
        #: weight of the summary head's term (:func:`cube_summaries`, :func:`summary_loss`)
        #: and the summaries' (n_lines, window bins, reference line index)
        self.summary_weight = float(summary_weight)
        self.summary_shape = tuple(int(v) for v in summary_shape) if summary_shape else None
        if self.summary_weight > 0 and self.summary_shape is None:
            raise ValueError("summary_weight > 0 needs summary_shape (n_lines, window bins, reference line)")
        #: radius (spaxels) of the nuclear aperture of the summaries' nuclear line ratios (0: none;
        #: a model file written before the key existed loads with 0, as it was trained)
        self.summary_nucleus_radius = float(summary_nucleus_radius)
        self.summary_head = None
        if self.summary_weight > 0:
            self.summary_head = layers.Dense(n_summaries(self.summary_shape[0], self.summary_nucleus_radius), name="summary_head")
        if self.line_weights:
            t = int(encoder.input_shape[1])
            per_step = np.repeat(np.asarray(self.line_weights, np.float32), t // len(self.line_weights))
            if per_step.size != t:
                raise ValueError(f"{len(self.line_weights)} line weights do not divide the model's {t} steps")
            self._step_weights = per_step.reshape(1, t, 1, 1, 1)
        #: multiplies beta; a KL warm-up callback raises it from 0 to 1 (VAE only)
        self.kl_scale = keras.Variable(1.0, trainable=False, name="kl_scale", dtype="float32")
        self.loss_mask = bool(loss_mask)
        self.seed = int(seed)
        self.sampling = Sampling(seed, name="sampling") if variational else None
        self.rec_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl") if variational else None
        self.cons_tracker = keras.metrics.Mean(name="consistency") if self.consistency_weight > 0 else None
        self.moment_tracker = keras.metrics.Mean(name="moment") if self.moment_weight > 0 else None
        self.summary_tracker = keras.metrics.Mean(name="summary") if self.summary_head is not None else None
        self.batch_loss = LastValue()

    def build(self, input_shape=None):
        if self.sampling is not None and not self.sampling.built:
            self.sampling.build([(None, self.decoder.input_shape[-1])] * 2)
        if self.summary_head is not None and not self.summary_head.built:
            self.summary_head.build((None, self.latent_dim))
        self.built = True

    @staticmethod
    def _cube(x):
        return x["x"] if isinstance(x, dict) else x

    def code(self, x, training=False):
        """The whole code the decoder reads: z (AE) or mu (VAE), physical + pose."""
        out = self.encoder(self._cube(x), training=training)
        return out[0] if self.variational else out

    def encode(self, x, training=False):
        """Latent used downstream: the physical part of z (AE) or mu (VAE)."""
        return self.code(x, training=training)[:, : self.latent_dim]

    def call(self, x, training=False):
        """{"recon": reconstruction, "code": z or mu (physical + pose)}, and the VAE's
        "logvar"; in training the VAE's decoder reads a sample z."""
        cube = self._cube(x)
        if self.variational:
            mu, logvar = self.encoder(cube, training=training)
            z = self.sampling([mu, logvar]) if training else mu
            return {"recon": self.decoder(z, training=training), "code": mu, "logvar": logvar}
        z = self.encoder(cube, training=training)
        return {"recon": self.decoder(z, training=training), "code": z}

    def reconstruct(self, x):
        """The reconstruction of ``x`` (inference: the VAE decodes mu)."""
        return self.decoder(self.code(x), training=False)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Eq. 1 (+ beta KL for the VAE, + the consistency term when on) from the
        outputs of :meth:`call`: the total, with the parts tracked as metrics."""
        cube = self._cube(x)
        w = x.get("w") if isinstance(x, dict) and self.loss_mask else None
        code = y_pred["code"]
        rec = eq1_loss(cube, y_pred["recon"], w, self._step_weights)
        total = rec
        self.rec_tracker.update_state(rec)
        if self.moment_tracker is not None:
            mom = ops.mean(moment_per_galaxy(cube, y_pred["recon"], *self.moment_shape, w, self._step_weights))
            total = total + self.moment_weight * mom
            self.moment_tracker.update_state(mom)
        if self.variational:
            logvar = y_pred["logvar"]
            kl = kl_divergence(code, logvar)
            kl_obj = kl_divergence(code, logvar, self.kl_free_bits) if self.kl_free_bits > 0 else kl
            total = total + self.beta * self.kl_scale * kl_obj
            self.kl_tracker.update_state(kl)
        if self.summary_tracker is not None:
            n_lines, bins, ref = self.summary_shape
            target = cube_summaries(cube, n_lines, bins, ref, self.summary_nucleus_radius)
            sl = summary_loss(self.summary_head(code[:, : self.latent_dim]), target)
            total = total + self.summary_weight * sl * ops.stop_gradient(rec)
            self.summary_tracker.update_state(sl)
        if self.cons_tracker is not None:
            c = consistency(code[:, : self.latent_dim])
            total = total + self.consistency_weight * c * ops.stop_gradient(rec)
            self.cons_tracker.update_state(c)
        self.batch_loss.update_state(total)
        return per_replica(total)

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "variational": self.variational,
            "beta": self.beta,
            "loss_mask": self.loss_mask,
            "seed": self.seed,
            "kl_free_bits": self.kl_free_bits,
            "latent_dim": self.latent_dim,
            "consistency_weight": self.consistency_weight,
            "trained_backend": self.trained_backend,
            "line_weights": self.line_weights,
            "moment_weight": self.moment_weight,
            "moment_shape": list(self.moment_shape) if self.moment_shape else None,
            "summary_weight": self.summary_weight,
            "summary_shape": list(self.summary_shape) if self.summary_shape else None,
            "summary_nucleus_radius": self.summary_nucleus_radius,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        enc = keras.saving.deserialize_keras_object(config.pop("encoder"))
        dec = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(enc, dec, **config)


def build_model(
    cfg: ModelConfig,
    kind: str,
    seed: int = 0,
    mean_cube: np.ndarray | None = None,
    line_weights: list[float] | None = None,
    ref_line: int | None = None,
) -> CubeAutoencoder:
    """Build and call (so that weights exist) an AE (``kind='ae'``) or VAE.
    ``mean_cube`` (time, y, x, c; the model's units) sets the decoder's learned mean
    cube (``cfg.mean_cube``); zeros when not given. ``line_weights``: Eq. 1's
    per-line weights (:func:`line_weights`; None: all 1). ``ref_line``: the index of
    H-alpha in the line list, the summary head's reference (None: the DR17 list's)."""
    if kind not in ("ae", "vae"):
        raise ValueError(f"model kind must be 'ae' or 'vae', got {kind!r}")
    variational = kind == "vae"
    enc = build_encoder(cfg, variational)
    dec = build_decoder(cfg)
    model = CubeAutoencoder(
        enc,
        dec,
        variational=variational,
        beta=cfg.beta,
        loss_mask=cfg.uses_weights,  # the model reads the batch's weights
        seed=seed,
        kl_free_bits=cfg.kl_free_bits,
        latent_dim=cfg.latent_dim,
        consistency_weight=cfg.consistency_weight,
        line_weights=line_weights,
        moment_weight=cfg.moment_weight,
        moment_shape=(cfg.n_lines, cfg.window_bins),
        summary_weight=cfg.summary_weight,
        summary_shape=(cfg.n_lines, cfg.window_bins, DEFAULT_REF_LINE if ref_line is None else int(ref_line)),
        summary_nucleus_radius=cfg.summary_nucleus_radius,
        name=kind,
    )
    model(np.zeros((1, *cfg.input_shape), dtype="float32"))
    if cfg.mean_cube and mean_cube is not None:
        dec.get_layer("mean_cube").mean.assign(np.asarray(mean_cube, dtype="float32").reshape(cfg.input_shape))
    return model


def load_model(path) -> CubeAutoencoder:
    """Load a trained model in Keras safe mode (no arbitrary code from the file)."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)


def architecture_table(model: CubeAutoencoder) -> list[tuple[str, str, str, int]]:
    """(part, layer, output shape, parameters) for every layer of encoder and decoder."""
    rows = []
    for part in (model.encoder, model.decoder):
        for layer in part.layers:
            shape = layer.output.shape if hasattr(layer, "output") else None
            if isinstance(shape, list):
                shape = shape[0]
            rows.append((part.name, f"{layer.name} ({type(layer).__name__})", str(tuple(shape)), int(layer.count_params())))
    return rows
