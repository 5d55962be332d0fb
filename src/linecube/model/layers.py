"""The autoencoders' custom Keras layers and learning-rate schedules, registered
(package ``linecube``) so that .keras files load in safe mode, no custom_objects."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

# Custom layers (registered: .keras files load in safe mode, no custom_objects)


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
class SpatialMoments(layers.Layer):
    """(B, T, h, w, C) -> (B, T * 2C): each channel's mean and standard deviation over
    the image, per step. Unchanged by the augmentation's flips and 90-degree turns; a
    channel that reads the local line-of-sight velocity gives, in its standard
    deviation, the velocity field's amplitude whatever its position angle (a linear
    read-out of the map cannot: it gives (v cos PA, v sin PA))."""

    def call(self, x):
        x = ops.cast(x, "float32")
        mean = ops.mean(x, axis=(2, 3))
        std = ops.sqrt(ops.mean(ops.square(x - mean[:, :, None, None]), axis=(2, 3)) + 1e-6)
        t, c = x.shape[1], x.shape[-1]
        return ops.reshape(ops.concatenate([mean, std], axis=-1), (-1, t * 2 * c))

    def compute_output_shape(self, input_shape):
        n, t, _h, _w, c = input_shape
        return (n, t * 2 * c)


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
