"""Appearance randomisation and target-aware alignment of source slices.

A segmenter trained from scratch on one modality learns that modality's intensity profile;
these transforms change the profile while keeping the anatomy (and so the label), so the
features it learns depend less on it. All take and return float images in [-1, 1] of shape
(C, H, W) and draw their randomness from a ``torch.Generator`` (seeded per sample and
iteration by the trainer, so a resumed run draws exactly the same transforms).

- :func:`fda`: Fourier domain adaptation (Yang & Soatto, CVPR 2020): the source's
  low-frequency amplitude band is replaced by a target slice's; phase (structure) is kept.
- :func:`bezier_curve`: a random intensity remapping by a cubic Bezier curve, monotone or
  not (global location-scale augmentation, Su et al., SLAug, AAAI 2023).
- :func:`random_conv`: a random shallow convolutional network, mixed with the original
  (global intensity non-linear augmentation, GIN, Ouyang et al., IEEE TMI 2022).
- :func:`blended_random_conv`: two such views blended by a random smooth field, so the
  appearance changes across the slice (GIN-IPA's interventional pseudo-correlation
  augmentation, same paper).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F


def _low_band(h: int, w: int, beta: float) -> Tuple[slice, slice]:
    """Rows/columns of the centred (fftshifted) spectrum within the band ``beta``:
    ``b = floor(beta * min(h, w))`` frequencies either side of zero, a symmetric square."""
    b = int(math.floor(beta * min(h, w)))
    ch, cw = h // 2, w // 2
    return slice(ch - b, ch + b + 1), slice(cw - b, cw + b + 1)


def fda(source: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Source slice with its low-frequency amplitude replaced by ``target``'s.

    source, target: (C, H, W), same shape. ``beta`` in [0, 0.5): the half-width of the swapped
    band as a fraction of min(H, W) (0: unchanged). The band is symmetric about frequency 0, so
    the result is real; it is NOT clamped (the caller clamps to the network's range).
    """
    if source.shape != target.shape:
        raise ValueError(f"fda: source {tuple(source.shape)} and target {tuple(target.shape)} differ")
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"fda: beta must be in [0, 0.5), got {beta}")
    dims = (-2, -1)
    fs = torch.fft.fftshift(torch.fft.fft2(source.double()), dim=dims)
    ft = torch.fft.fftshift(torch.fft.fft2(target.double()), dim=dims)
    amp, phase = fs.abs(), fs.angle()
    rows, cols = _low_band(source.shape[-2], source.shape[-1], beta)
    amp[..., rows, cols] = ft.abs()[..., rows, cols]
    mixed = torch.polar(amp, phase)
    out = torch.fft.ifft2(torch.fft.ifftshift(mixed, dim=dims)).real
    return out.to(source.dtype)


def bezier_control_points(generator: torch.Generator, monotone: bool) -> torch.Tensor:
    """(4, 2) control points (x, y) of a random intensity curve on [-1, 1].

    The x coordinates run from -1 to 1 and increase, so the curve is a function of x.
    Monotone curves go from (-1, -1) to (1, 1) with increasing y, reversed (y -> -y) with
    probability 1/2: an inverted contrast is still monotone. Free curves draw all four y
    values in [-1, 1], so intensities can fold (what CT <-> MR needs: a tissue bright in one
    modality and mid-grey in the other); :func:`bezier_curve` stretches them to the full range.
    """
    r = torch.rand(7, generator=generator, dtype=torch.float64) * 2 - 1
    one = torch.ones(1, dtype=torch.float64)
    xs = torch.cat([-one, r[:2].sort().values, one])
    if monotone:
        ys = torch.cat([-one, r[2:4].sort().values, one])
        if float(r[6]) < 0.0:
            ys = -ys
    else:
        ys = r[2:6]
    return torch.stack([xs, ys], dim=1)


def bezier_curve(image: torch.Tensor, generator: torch.Generator, monotone: bool = False,
                 samples: int = 1000) -> torch.Tensor:
    """Remap intensities through a random cubic Bezier curve; [-1, 1] maps into [-1, 1]
    (a Bezier curve stays in the convex hull of its control points), and the curve's values
    are stretched to span [-1, 1] so no contrast is lost to a flat curve."""
    p = bezier_control_points(generator, monotone)
    t = torch.linspace(0.0, 1.0, samples, dtype=torch.float64)[:, None]
    basis = torch.cat([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3], dim=1)
    curve = basis @ p  # (samples, 2), x increasing in t
    y = curve[:, 1]
    lo, hi = y.min(), y.max()
    y = 2 * (y - lo) / (hi - lo) - 1 if hi - lo > 1e-6 else torch.zeros_like(y)
    return _interp(image.double().clamp(-1.0, 1.0), curve[:, 0].contiguous(), y.contiguous()).to(image.dtype)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x (xp increasing), like numpy.interp."""
    i = torch.searchsorted(xp, x.reshape(-1).contiguous()).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = ((x.reshape(-1) - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return (y0 + w * (y1 - y0)).reshape(x.shape)


def random_conv(image: torch.Tensor, generator: torch.Generator, layers: int = 4,
                width: int = 2) -> torch.Tensor:
    """A random shallow network (kernels 1x1 or 3x3, LeakyReLU 0.2 between layers) applied to
    ``image``, rescaled to [-1, 1] and mixed with the original by a random weight a ~ U(0, 1):
    ``a * net(x) + (1 - a) * x``. Shape is kept; values stay in [-1, 1] and finite.

    ``image`` (C, H, W): each channel (a slice and its neighbours, ``data.context``) goes
    through the same one-channel network, rescaled by the stack's common range, so the
    neighbours keep one appearance and their intensity order."""
    x = image.double()[:, None]  # channels as a batch of grey slices
    chans = [1] + [width] * (layers - 1) + [1]
    for k in range(layers):
        size = 1 if float(torch.rand(1, generator=generator)) < 0.5 else 3
        w = torch.randn(chans[k + 1], chans[k], size, size, generator=generator, dtype=torch.float64)
        b = torch.randn(chans[k + 1], generator=generator, dtype=torch.float64)
        x = F.conv2d(x, w / math.sqrt(chans[k] * size * size), b, padding=size // 2)
        if k < layers - 1:
            x = F.leaky_relu(x, 0.2)
    x = x[:, 0]
    lo, hi = x.amin(), x.amax()
    x = 2 * (x - lo) / (hi - lo) - 1 if hi - lo > 1e-8 else torch.zeros_like(x)
    a = float(torch.rand(1, generator=generator, dtype=torch.float64))
    return (a * x + (1 - a) * image.double()).to(image.dtype)


# control points of the blending field every quarter of the slice (5 x 5 on any size):
# smooth enough to look like a bias field, coarse enough to leave each structure one look
FIELD_CELLS = 4


def smooth_field(h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """A random smooth (h, w) field spanning [0, 1] exactly: control points ~ U(0, 1) on a
    (FIELD_CELLS + 1)^2 grid, bicubic interpolation through them, then rescaled to [0, 1]
    (a near-flat draw is stretched too, as in GIN-IPA, whose blend always spans both views)."""
    grid = torch.rand(1, 1, FIELD_CELLS + 1, FIELD_CELLS + 1, generator=generator, dtype=torch.float64)
    f = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)[0, 0]
    lo, hi = f.amin(), f.amax()
    return (f - lo) / (hi - lo) if hi - lo > 1e-8 else torch.full_like(f, 0.5)


def blended_random_conv(image: torch.Tensor, generator: torch.Generator, layers: int = 4) -> torch.Tensor:
    """``m * g1 + (1 - m) * g2``: two independent :func:`random_conv` views ``g1, g2`` of
    ``image`` blended by one :func:`smooth_field` ``m`` (shared by the channels of a stack, so
    neighbours keep one appearance). A convex combination: values stay in [-1, 1]."""
    g1 = random_conv(image, generator, layers=layers).double()
    g2 = random_conv(image, generator, layers=layers).double()
    m = smooth_field(image.shape[-2], image.shape[-1], generator)
    return (m * g1 + (1 - m) * g2).to(image.dtype)


def gin_view(image: torch.Tensor, cfg, generator: torch.Generator) -> torch.Tensor:
    """One GIN view of ``image`` under ``cfg`` (an ``AppearanceConfig``): blended with
    probability ``cfg.gin_blend``, else one network. With ``gin_blend`` 0 nothing extra is
    drawn, so the stream (and every earlier run) is unchanged."""
    if cfg.gin_blend > 0 and float(torch.rand(1, generator=generator)) < cfg.gin_blend:
        return blended_random_conv(image, generator, layers=cfg.gin_layers)
    return random_conv(image, generator, layers=cfg.gin_layers)


def randomise(image: torch.Tensor, cfg, generator: torch.Generator, target_images=None) -> torch.Tensor:
    """Apply the enabled transforms of ``cfg`` (an ``AppearanceConfig``) to one source slice,
    each with its own probability, in the order FDA -> curve -> random network.

    ``target_images``: (T, C, H, W) unlabelled target slices FDA draws from."""
    r = torch.rand(3, generator=generator)
    out = image
    if cfg.fda > 0 and float(r[0]) < cfg.fda:
        if target_images is None or len(target_images) == 0:
            raise ValueError("FDA needs target slices")
        j = int(torch.randint(0, len(target_images), (1,), generator=generator))
        out = fda(out, target_images[j], cfg.fda_beta).clamp(-1.0, 1.0)
    if cfg.curves > 0 and float(r[1]) < cfg.curves:
        out = bezier_curve(out, generator, monotone=cfg.curves_monotone)
    if cfg.gin > 0 and float(r[2]) < cfg.gin:
        out = random_conv(out, generator, layers=cfg.gin_layers)
    return out


def enabled(cfg) -> bool:
    return cfg.fda > 0 or cfg.curves > 0 or cfg.gin > 0
