"""Loss: Eq. 1 of the paper, per galaxy the sum over spaxels of the mean absolute
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

Everything here is ``keras.ops``; training goes through Keras's own ``train_step``
of the backend (TensorFlow, PyTorch or JAX) via ``CubeAutoencoder.compute_loss``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import ops

# Loss (Eq. 1), KL and consistency


@dataclass(frozen=True)
class LossSettings:
    """Everything the autoencoder's loss reads, in one frozen object (stored flat
    among the model's .keras config keys, as the fields are named).

    beta: the VAE's KL weight; loss_mask: Eq. 1 reads the batch's voxel weights;
    kl_free_bits: free bits per latent dimension (nats); consistency_weight: the
    VICReg term's fraction of Eq. 1; line_weights: Eq. 1's weight per emission line
    (:func:`line_weights`; None: all 1); moment_weight and moment_shape (n_lines,
    window bins): the kinematic term; summary_weight, summary_shape (n_lines, window
    bins, reference line index), summary_nucleus_radius (spaxels) and
    summary_kinematic_weight (the kinematic columns' extra weight): the summary head."""

    beta: float = 1.0
    loss_mask: bool = False
    kl_free_bits: float = 0.0
    consistency_weight: float = 0.0
    line_weights: tuple[float, ...] | None = None
    moment_weight: float = 0.0
    moment_shape: tuple[int, int] | None = None
    summary_weight: float = 0.0
    summary_shape: tuple[int, int, int] | None = None
    summary_nucleus_radius: float = 0.0
    summary_kinematic_weight: float = 0.0

    def __post_init__(self):
        norm = {
            "beta": float(self.beta),
            "loss_mask": bool(self.loss_mask),
            "kl_free_bits": float(self.kl_free_bits),
            "consistency_weight": float(self.consistency_weight),
            "line_weights": tuple(float(v) for v in self.line_weights) if self.line_weights else None,
            "moment_weight": float(self.moment_weight),
            "moment_shape": tuple(int(v) for v in self.moment_shape) if self.moment_shape else None,
            "summary_weight": float(self.summary_weight),
            "summary_shape": tuple(int(v) for v in self.summary_shape) if self.summary_shape else None,
            "summary_nucleus_radius": float(self.summary_nucleus_radius),
            "summary_kinematic_weight": float(self.summary_kinematic_weight),
        }
        for k, v in norm.items():
            object.__setattr__(self, k, v)
        if self.moment_weight > 0 and self.moment_shape is None:
            raise ValueError("moment_weight > 0 needs moment_shape (n_lines, window bins)")
        if self.summary_weight > 0 and self.summary_shape is None:
            raise ValueError("summary_weight > 0 needs summary_shape (n_lines, window bins, reference line)")

    def to_config(self) -> dict:
        """The fields as JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def eq1_per_galaxy(x, xr, weights=None, step_weights=None):
    """The paper's Eq. 1 of each galaxy, (B,), for (B, T, H, W, C) tensors.

    Wavelength is the (T, C) pair of axes. Per galaxy: sum over spaxels (H, W)
    of the MAE along wavelength, plus sum over wavelength channels (T, C) of the
    MAE over the image. ``weights`` (same shape, >= 0; 0 = masked) multiply each
    voxel's absolute error, and each mean becomes one over the voxels of nonzero
    weight (an all-masked spaxel or channel contributes 0): with 0/1 weights
    (``loss_mask``) a mean over usable voxels, with ivar weights
    (:func:`linecube.model.batches.ivar_weights`, mean 1 per galaxy) a noise-weighted one.
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
