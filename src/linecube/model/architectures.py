"""The two architectures (``model.architecture``), as functional Keras models:

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
"""

from __future__ import annotations

import keras
from keras import layers

from linecube.model.layers import DepthToSpace, MeanCube, RepeatTime, SoftClip, SpaceToDepth, SpatialMoments
from linecube.model.spec import ModelConfig

# Builders


def _code_layers(x, cfg: ModelConfig, variational: bool, moments=None):
    """The encoder's head: Dense to the code (AE) or to mu and a soft-clipped log-variance
    (VAE), from the flattened final state and, when given, the stem's spatial moments."""
    x = layers.Flatten(name="flatten")(x)
    if moments is not None:
        x = layers.Concatenate(name="with_moments")([x, moments])
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
        moments = SpatialMoments(name="stem_moments")(x) if cfg.encoder_moments else None
        for i, f in enumerate(cfg.filters):
            last = i == len(cfg.filters) - 1
            x = layers.ConvLSTM2D(
                f, cfg.kernel, padding="same", activation="tanh", return_sequences=not last, name=f"convlstm_{i + 1}"
            )(x)
            if cfg.encoder_layernorm:
                x = layers.LayerNormalization(name=f"layernorm_{i + 1}")(x)
        return keras.Model(inp, _code_layers(x, cfg, variational, moments), name=name)
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
