"""The autoencoder: :class:`CubeAutoencoder` owns a functional encoder and decoder
(:mod:`linecube.model.architectures`) and computes its loss
(:mod:`linecube.model.losses`, :mod:`linecube.model.summaries`).

The latent has ``latent_dim`` physical dimensions and, optionally, ``pose_dim``
more that only the decoder reads: with the consistency term (below) the physical
part learns to ignore orientation, position and noise, which the pose part keeps
for the reconstruction. Downstream (latents.h5, neighbours, UMAP) uses the
physical part only (AE: z; VAE: mu).
"""

from __future__ import annotations

from dataclasses import fields

import keras
import numpy as np
from keras import layers, ops

from linecube.io.formats import load_lines
from linecube.model.architectures import build_decoder, build_encoder
from linecube.model.layers import Sampling
from linecube.model.losses import LossSettings, consistency, eq1_loss, kl_divergence, moment_per_galaxy, per_replica
from linecube.model.spec import ModelConfig
from linecube.model.summaries import cube_summaries, line_dominance, n_summaries, summary_loss

# The model


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
        loss: LossSettings | None = None,
        seed: int = 0,
        latent_dim: int | None = None,
        trained_backend: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        #: the Keras backend that trained the weights (recorded in the .keras file;
        #: the model loads and scores on any backend)
        self.trained_backend = trained_backend or keras.backend.backend()
        self.encoder = encoder
        self.decoder = decoder
        self.variational = bool(variational)
        #: the loss's settings (frozen)
        self.loss_settings = loss or LossSettings()
        self.latent_dim = int(latent_dim) if latent_dim is not None else int(decoder.input_shape[-1])
        self._step_weights = None  # (1, T, 1, 1, 1): each step's line weight
        ls = self.loss_settings
        self.summary_head = None
        if ls.summary_weight > 0:
            self.summary_head = layers.Dense(n_summaries(ls.summary_shape[0], ls.summary_nucleus_radius), name="summary_head")
        if ls.line_weights:
            t = int(encoder.input_shape[1])
            per_step = np.repeat(np.asarray(ls.line_weights, np.float32), t // len(ls.line_weights))
            if per_step.size != t:
                raise ValueError(f"{len(ls.line_weights)} line weights do not divide the model's {t} steps")
            self._step_weights = per_step.reshape(1, t, 1, 1, 1)
        #: multiplies beta; a KL warm-up callback raises it from 0 to 1 (VAE only)
        self.kl_scale = keras.Variable(1.0, trainable=False, name="kl_scale", dtype="float32")
        self.seed = int(seed)
        self.sampling = Sampling(seed, name="sampling") if variational else None
        self.rec_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl") if variational else None
        self.cons_tracker = keras.metrics.Mean(name="consistency") if ls.consistency_weight > 0 else None
        self.moment_tracker = keras.metrics.Mean(name="moment") if ls.moment_weight > 0 else None
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
        ls = self.loss_settings
        cube = self._cube(x)
        w = x.get("w") if isinstance(x, dict) and ls.loss_mask else None
        code = y_pred["code"]
        rec = eq1_loss(cube, y_pred["recon"], w, self._step_weights)
        total = rec
        self.rec_tracker.update_state(rec)
        if self.moment_tracker is not None:
            mom = ops.mean(moment_per_galaxy(cube, y_pred["recon"], *ls.moment_shape, w, self._step_weights))
            total = total + ls.moment_weight * mom
            self.moment_tracker.update_state(mom)
        if self.variational:
            logvar = y_pred["logvar"]
            kl = kl_divergence(code, logvar)
            kl_obj = kl_divergence(code, logvar, ls.kl_free_bits) if ls.kl_free_bits > 0 else kl
            total = total + ls.beta * self.kl_scale * kl_obj
            self.kl_tracker.update_state(kl)
        if self.summary_tracker is not None:
            n_lines, bins, ref = ls.summary_shape
            target = cube_summaries(cube, n_lines, bins, ref, ls.summary_nucleus_radius)
            gw = line_dominance(cube, n_lines, bins, ref) if ls.summary_kinematic_weight > 0 else None
            sl = summary_loss(self.summary_head(code[:, : self.latent_dim]), target, ls.summary_kinematic_weight, gw)
            total = total + ls.summary_weight * sl * ops.stop_gradient(rec)
            self.summary_tracker.update_state(sl)
        if self.cons_tracker is not None:
            c = consistency(code[:, : self.latent_dim])
            total = total + ls.consistency_weight * c * ops.stop_gradient(rec)
            self.cons_tracker.update_state(c)
        self.batch_loss.update_state(total)
        return per_replica(total)

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "variational": self.variational,
            "seed": self.seed,
            "latent_dim": self.latent_dim,
            "trained_backend": self.trained_backend,
            **self.loss_settings.to_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        enc = keras.saving.deserialize_keras_object(config.pop("encoder"))
        dec = keras.saving.deserialize_keras_object(config.pop("decoder"))
        loss = LossSettings(**{f.name: config.pop(f.name) for f in fields(LossSettings) if f.name in config})
        return cls(enc, dec, loss=loss, **config)


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
    loss = LossSettings(
        beta=cfg.beta,
        loss_mask=cfg.uses_weights,  # the model reads the batch's weights
        kl_free_bits=cfg.kl_free_bits,
        consistency_weight=cfg.consistency_weight,
        line_weights=line_weights,
        moment_weight=cfg.moment_weight,
        moment_shape=(cfg.n_lines, cfg.window_bins),
        summary_weight=cfg.summary_weight,
        summary_shape=(cfg.n_lines, cfg.window_bins, load_lines().halpha if ref_line is None else int(ref_line)),
        summary_nucleus_radius=cfg.summary_nucleus_radius,
        summary_kinematic_weight=cfg.summary_kinematic_weight,
    )
    model = CubeAutoencoder(enc, dec, variational=variational, loss=loss, seed=seed, latent_dim=cfg.latent_dim, name=kind)
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
