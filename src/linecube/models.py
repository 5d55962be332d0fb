"""ConvLSTM2D autoencoder (AE) and variational autoencoder (VAE), Keras 3.

The recurrent (time) axis is wavelength and each time step is a 32x32 spaxel
image, as in Mantha et al. (2023). Two layouts of the (190, 32, 32) cube:

* ``wavelength``: 190 steps x (32, 32, 1), the paper's;
* ``lines``: 19 steps (one per emission line) x (32, 32, 10 channels: the line's
  window bins). ~9x fewer recurrent steps: 0.15 vs 1.29 s per batch of 16 on 2
  CPU cores for a ~560k-parameter probe; the default.

Encoder: ConvLSTM2D(tanh, strided) + LayerNormalization blocks, the last one
returning its final state, then Dense to the latent (VAE: mu and log-variance).
``encoder_layernorm=False`` drops the encoder's normalisation: Keras normalises
each spaxel's features to unit variance, which removes most of a bright spaxel's
brightness (an option; the paper's architecture is the default).
Decoder: Dense -> (h, w, f) map, repeated over the time steps together with a
positional code of the step, ConvLSTM2D(tanh) + LayerNormalization + 2x
upsampling blocks, and a final ConvLSTM2D with ELU output.

Loss: Eq. 1 of the paper, per galaxy the sum over spaxels of the mean absolute
error along wavelength plus the sum over wavelength channels of the mean
absolute error over the image, averaged over the batch; optionally only over
usable voxels. VAE: L_rec + beta * KL(N(mu, sigma) || N(0, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers, ops

LAYOUTS = ("lines", "wavelength")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture keys (config ``model:``)."""

    layout: str = "lines"
    filters: tuple[int, ...] = (32, 64)
    kernel: int = 3
    strides: tuple[int, ...] = (2, 2)
    latent_dim: int = 128
    beta: float = 1.0
    loss_mask: bool = False
    loss_weighting: str = "none"
    loss_sys_floor: float = 0.05
    encoder_layernorm: bool = True
    kl_free_bits: float = 0.0
    n_lines: int = 19
    window_bins: int = 10
    crop: int = 32
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def uses_weights(self) -> bool:
        """Whether Eq. 1 takes per-voxel weights (``loss_mask``, or ``loss_weighting``)."""
        return self.loss_mask or self.loss_weighting != "none"

    @classmethod
    def from_config(cls, model: dict, n_lines: int = 19, window_bins: int = 10, crop: int = 32) -> ModelConfig:
        """From a ``model:`` section, partial or whole (the schema fills the rest);
        strides default to 2 per filter block when not given."""
        from .config import with_defaults

        m = with_defaults("model", model)
        filters = tuple(int(f) for f in m["filters"])
        strides = tuple(int(s) for s in model["strides"]) if "strides" in model else (2,) * len(filters)
        if len(strides) != len(filters):
            raise ValueError(f"model.strides has {len(strides)} entries but model.filters has {len(filters)}")
        layout = m["layout"]
        if layout not in LAYOUTS:
            raise ValueError(f"model.layout must be one of {LAYOUTS}, got {layout!r}")
        return cls(
            layout=layout,
            filters=filters,
            kernel=int(m["kernel"]),
            strides=strides,
            latent_dim=int(m["latent_dim"]),
            beta=float(m["beta"]),
            loss_mask=bool(m["loss_mask"]),
            loss_weighting=str(m["loss_weighting"]),
            loss_sys_floor=float(m["loss_sys_floor"]),
            encoder_layernorm=bool(m["encoder_layernorm"]),
            kl_free_bits=float(m["kl_free_bits"]),
            n_lines=n_lines,
            window_bins=window_bins,
            crop=crop,
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


# --------------------------------------------------------------------------
# Layout conversion (numpy; (N, 190, 32, 32) <-> model input)
# --------------------------------------------------------------------------


def to_model_layout(cubes: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """(N, lines*bins, y, x) cubes -> (N, time, y, x, channels) model input."""
    n = cubes.shape[0]
    if cfg.layout == "wavelength":
        return cubes[..., None]
    c = cubes.reshape(n, cfg.n_lines, cfg.window_bins, cfg.crop, cfg.crop)
    return np.ascontiguousarray(c.transpose(0, 1, 3, 4, 2))


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
    lr_max/final_div afterwards."""

    def __init__(self, lr_max, total_steps, warmup=0.3, div=25.0, final_div=1e3):
        self.lr_max, self.total, self.warmup, self.div, self.final_div = lr_max, total_steps, warmup, div, final_div

    def __call__(self, step):
        step = ops.cast(step, "float32")
        up = max(1.0, self.warmup * self.total)
        down = max(1.0, self.total - up)
        lo, hi, end = self.lr_max / self.div, self.lr_max, self.lr_max / self.final_div
        rise = lo + (hi - lo) * 0.5 * (1.0 - ops.cos(np.pi * ops.clip(step / up, 0.0, 1.0)))
        fall = end + (hi - end) * 0.5 * (1.0 + ops.cos(np.pi * ops.clip((step - up) / down, 0.0, 1.0)))
        return ops.where(step < up, rise, fall)

    def get_config(self):
        return {
            "lr_max": self.lr_max,
            "total_steps": self.total,
            "warmup": self.warmup,
            "div": self.div,
            "final_div": self.final_div,
        }


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def _bottleneck(cfg: ModelConfig) -> tuple[int, int]:
    side = cfg.crop
    for s in cfg.strides:
        side = -(-side // s)
    return side, cfg.filters[-1]


def build_encoder(cfg: ModelConfig, variational: bool, name: str = "encoder") -> keras.Model:
    """Functional encoder: (time, y, x, c) -> latent (AE) or [mu, logvar] (VAE)."""
    inp = keras.Input(cfg.input_shape, name="cube")
    x = inp
    for i, (f, s) in enumerate(zip(cfg.filters, cfg.strides)):
        last = i == len(cfg.filters) - 1
        x = layers.ConvLSTM2D(
            f, cfg.kernel, strides=s, padding="same", activation="tanh", return_sequences=not last, name=f"convlstm_{i + 1}"
        )(x)
        if cfg.encoder_layernorm:
            x = layers.LayerNormalization(name=f"layernorm_{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    if variational:
        mu = layers.Dense(cfg.latent_dim, name="z_mean")(x)
        logvar = SoftClip(10.0, name="z_log_var")(layers.Dense(cfg.latent_dim, name="z_log_var_raw")(x))
        return keras.Model(inp, [mu, logvar], name=name)
    z = layers.Dense(cfg.latent_dim, name="z")(x)
    return keras.Model(inp, z, name=name)


def build_decoder(cfg: ModelConfig, name: str = "decoder") -> keras.Model:
    """Functional decoder: latent -> (time, y, x, c) reconstruction (ELU output)."""
    side, f0 = _bottleneck(cfg)
    z = keras.Input((cfg.latent_dim,), name="z")
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
    return keras.Model(z, out, name=name)


# --------------------------------------------------------------------------
# Loss (Eq. 1) and KL
# --------------------------------------------------------------------------


def eq1_loss(x, xr, weights=None):
    """Paper's Eq. 1, batch-averaged, for (B, T, H, W, C) tensors.

    Wavelength is the (T, C) pair of axes. Per galaxy: sum over spaxels (H, W)
    of the MAE along wavelength, plus sum over wavelength channels (T, C) of the
    MAE over the image. ``weights`` (same shape, >= 0; 0 = masked) multiply each
    voxel's absolute error, and each mean becomes one over the voxels of nonzero
    weight (an all-masked spaxel or channel contributes 0): with 0/1 weights
    (``loss_mask``) a mean over usable voxels, with ivar weights
    (:func:`linecube.train.ivar_weights`, mean 1 per galaxy) a noise-weighted one.
    """
    d = ops.abs(ops.cast(x, "float32") - ops.cast(xr, "float32"))
    if weights is None:
        per_spaxel = ops.mean(d, axis=(1, 4))
        per_channel = ops.mean(d, axis=(2, 3))
    else:
        w = ops.cast(weights, "float32")
        used = ops.cast(w > 0, "float32")
        d = d * w
        per_spaxel = ops.sum(d, axis=(1, 4)) / ops.maximum(ops.sum(used, axis=(1, 4)), 1.0)
        per_channel = ops.sum(d, axis=(2, 3)) / ops.maximum(ops.sum(used, axis=(2, 3)), 1.0)
    return ops.mean(ops.sum(per_spaxel, axis=(1, 2)) + ops.sum(per_channel, axis=(1, 2)))


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


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="linecube")
class CubeAutoencoder(keras.Model):
    """Thin subclassed model owning a functional encoder and decoder.

    ``variational=False``: AE, latent = encoder(x). ``True``: VAE, latent used
    downstream = mu; training samples z with :class:`Sampling` and adds
    beta * KL. Training data are dicts ``{"x": cube, "w": usable-voxel weights}``
    (``w`` optional; used when ``loss_mask``).
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.variational = bool(variational)
        self.beta = float(beta)
        self.kl_free_bits = float(kl_free_bits)
        #: multiplies beta; a KL warm-up callback raises it from 0 to 1 (VAE only)
        self.kl_scale = keras.Variable(1.0, trainable=False, name="kl_scale", dtype="float32")
        self.loss_mask = bool(loss_mask)
        self.seed = int(seed)
        self.sampling = Sampling(seed, name="sampling") if variational else None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.rec_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def build(self, input_shape=None):
        if self.sampling is not None and not self.sampling.built:
            self.sampling.build([(None, self.decoder.input_shape[-1])] * 2)
        self.built = True

    @property
    def metrics(self):
        return (
            [self.loss_tracker, self.rec_tracker, self.kl_tracker] if self.variational else [self.loss_tracker, self.rec_tracker]
        )

    def encode(self, x, training=False):
        """Latent used downstream: z (AE) or mu (VAE)."""
        out = self.encoder(x, training=training)
        return out[0] if self.variational else out

    def call(self, x, training=False):
        if self.variational:
            mu, logvar = self.encoder(x, training=training)
            z = self.sampling([mu, logvar]) if training else mu
        else:
            z = self.encoder(x, training=training)
        return self.decoder(z, training=training)

    def _compute_losses(self, data, training: bool):
        x = data["x"] if isinstance(data, dict) else data
        w = data.get("w") if isinstance(data, dict) and self.loss_mask else None
        if self.variational:
            mu, logvar = self.encoder(x, training=training)
            z = self.sampling([mu, logvar]) if training else mu
            xr = self.decoder(z, training=training)
            rec = eq1_loss(x, xr, w)
            kl = kl_divergence(mu, logvar)
            kl_obj = kl_divergence(mu, logvar, self.kl_free_bits) if self.kl_free_bits > 0 else kl
            return rec + self.beta * self.kl_scale * kl_obj, rec, kl
        xr = self.decoder(self.encoder(x, training=training), training=training)
        rec = eq1_loss(x, xr, w)
        return rec, rec, None

    def _update(self, total, rec, kl):
        self.loss_tracker.update_state(total)
        self.rec_tracker.update_state(rec)
        if kl is not None:
            self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            total, rec, kl = self._compute_losses(data, training=True)
            # gradients are summed over replicas by the optimizer under a distribution strategy
            scaled = total / tf.distribute.get_strategy().num_replicas_in_sync
            if self.optimizer is not None and hasattr(self.optimizer, "scale_loss"):
                scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return self._update(total, rec, kl)

    def test_step(self, data):
        total, rec, kl = self._compute_losses(data, training=False)
        return self._update(total, rec, kl)

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
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        enc = keras.saving.deserialize_keras_object(config.pop("encoder"))
        dec = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(enc, dec, **config)


def build_model(cfg: ModelConfig, kind: str, seed: int = 0) -> CubeAutoencoder:
    """Build and call (so that weights exist) an AE (``kind='ae'``) or VAE."""
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
        name=kind,
    )
    model(np.zeros((1, *cfg.input_shape), dtype="float32"))
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
