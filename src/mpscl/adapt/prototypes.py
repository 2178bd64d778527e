"""Category prototypes: initialisation, EMA update and self-paced pseudo-labels.

docs/METHOD.md, Losses items 3 and 5. Prototypes are a (K,C) tensor of un-normalised
per-class mean features (background included). Everything here is a pure function of
tensors except :func:`init_prototypes`, which runs a model over a loader.

The EMA step is split so a distributed trainer can all-reduce the batch statistics::

    small = downsample_labels(labels, features.shape[-2:])
    sums, counts = class_feature_sums(features, small, K)
    # torch.distributed.all_reduce(sums); all_reduce(counts)
    prototypes = ema_update(prototypes, sums, counts, momentum)
"""
from __future__ import annotations

from typing import Iterable, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from ..losses.precision import full_precision as _full_precision

__all__ = [
    "downsample_labels",
    "class_feature_sums",
    "ema_update",
    "update_prototypes",
    "pseudo_label",
    "init_prototypes",
]


def _check_features(features: torch.Tensor) -> None:
    if features.dim() != 4:
        raise ValueError(f"features must be (B,C,h,w), got shape {tuple(features.shape)}")


def downsample_labels(
    labels: torch.Tensor, size: Union[int, Sequence[int]]
) -> torch.Tensor:
    """Nearest-neighbour downsampling of label maps to feature resolution.

    Exactly ``F.interpolate(labels[:, None].float(), size=size, mode="nearest")``, cast
    back to int64 (ignore ids such as -1 survive).

    Args:
        labels: (B,H,W) integer class ids. size: (h, w) or an int for (h, h).
    Returns:
        (B,h,w) int64.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B,H,W), got shape {tuple(labels.shape)}")
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be (h, w), got {size}")
    small = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
    return small[:, 0].long()


def class_feature_sums(
    features: torch.Tensor, labels_lowres: torch.Tensor, num_classes: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums and pixel counts of (detached, un-normalised) features.

    Args:
        features: (B,C,h,w) features; detached here.
        labels_lowres: (B,h,w) integer ids at feature resolution; ids outside
            [0, num_classes) (e.g. -1) are not counted.
        num_classes: K.
    Returns:
        sums: (K,C) float32 (float64 for float64 features), computed in full precision
            even under autocast; one batch is small enough for float32 accumulation
            (:func:`init_prototypes` accumulates batches in float64).
        counts: (K,) int64 pixel counts.
    """
    _check_features(features)
    b, c, h, w = features.shape
    if tuple(labels_lowres.shape) != (b, h, w):
        raise ValueError(
            f"labels_lowres must be (B,h,w) = {(b, h, w)} to match features, got "
            f"{tuple(labels_lowres.shape)} (use downsample_labels first)"
        )
    dtype = torch.promote_types(torch.float32, features.dtype)
    with _full_precision(features.device):
        f = features.detach().to(dtype).permute(0, 2, 3, 1).reshape(-1, c)     # (N,C)
        y = labels_lowres.reshape(-1)
        classes = torch.arange(num_classes, device=y.device)
        member = y[:, None] == classes[None, :]                                 # (N,K)
        sums = member.to(dtype).t() @ f                                          # (K,C)
        counts = member.sum(dim=0).to(torch.int64)
    return sums, counts


def ema_update(
    prototypes: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor, momentum: float
) -> torch.Tensor:
    """``c_k <- m * c_k + (1 - m) * sums_k / counts_k`` for classes with counts_k > 0;
    other classes keep their value. Returns a new (K,C) tensor in ``prototypes``' dtype
    and device; the input is not modified.

    Args:
        prototypes: (K,C). sums: (K,C). counts: (K,) (any numeric dtype).
        momentum: m in [0, 1] (0.2 in the published configs: the new batch dominates).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if prototypes.dim() != 2 or tuple(sums.shape) != tuple(prototypes.shape):
        raise ValueError(
            f"sums {tuple(sums.shape)} must match prototypes (K,C) {tuple(prototypes.shape)}"
        )
    if tuple(counts.shape) != (prototypes.shape[0],):
        raise ValueError(f"counts must be (K,) = ({prototypes.shape[0]},), got {tuple(counts.shape)}")
    dtype = torch.promote_types(torch.float32, prototypes.dtype)
    with _full_precision(prototypes.device):
        old = prototypes.detach().to(dtype)
        cnt = counts.to(device=old.device, dtype=dtype)
        mean = sums.detach().to(device=old.device, dtype=dtype) / cnt.clamp_min(1.0)[:, None]
        new = momentum * old + (1.0 - momentum) * mean
        out = torch.where((cnt > 0)[:, None], new, old)
    return out.to(prototypes.dtype)


def update_prototypes(
    prototypes: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, momentum: float
) -> torch.Tensor:
    """One EMA step of the prototypes from a labelled (source) batch.

    Args:
        prototypes: (K,C) current prototypes.
        features: (B,C,h,w) source features (detached here, not normalised).
        labels: (B,H,W) int64 labels at IMAGE resolution, downsampled here to (h,w) with
            :func:`downsample_labels` (nearest).
        momentum: m of ``c <- m*c + (1-m)*batch_mean``.
    Returns:
        new (K,C) tensor; classes absent from the batch keep their old value.
    """
    _check_features(features)
    if prototypes.dim() != 2 or prototypes.shape[1] != features.shape[1]:
        raise ValueError(
            f"prototypes must be (K,C) with C = {features.shape[1]}, got {tuple(prototypes.shape)}"
        )
    small = downsample_labels(labels, features.shape[-2:])
    sums, counts = class_feature_sums(features, small, prototypes.shape[0])
    return ema_update(prototypes, sums, counts, momentum)


def pseudo_label(
    features: torch.Tensor, prototypes: torch.Tensor, threshold: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Self-paced pseudo-labels of target pixels from prototype similarity.

    cos_k = <f/|f|, c_k/|c_k|> on detached features and prototypes; label = argmax_k
    (ties -> the lowest class id); selected where ``top1 - top2 > threshold`` (strict,
    so tied pixels are never selected for threshold >= 0).

    Args:
        features: (B,C,h,w). prototypes: (K,C), K >= 2. threshold: 0.25 published.
    Returns:
        labels (B,h,w) int64, selected (B,h,w) bool.
    """
    _check_features(features)
    c = features.shape[1]
    if prototypes.dim() != 2 or prototypes.shape[1] != c or prototypes.shape[0] < 2:
        raise ValueError(
            f"prototypes must be (K,C) with K >= 2 and C = {c}, got {tuple(prototypes.shape)}"
        )
    dtype = torch.promote_types(
        torch.promote_types(torch.float32, features.dtype), prototypes.dtype
    )
    with torch.no_grad(), _full_precision(features.device):
        f = F.normalize(features.detach().to(dtype), p=2, dim=1)
        p = F.normalize(prototypes.detach().to(dtype), p=2, dim=1)
        cos = torch.einsum("bchw,kc->bkhw", f, p)
        labels = cos.argmax(dim=1)
        top2 = cos.topk(2, dim=1).values
        selected = (top2[:, 0] - top2[:, 1]) > threshold
    return labels.to(torch.int64), selected


def init_prototypes(
    model: torch.nn.Module,
    loader: Iterable,
    num_classes: int,
    device: Union[str, torch.device],
    amp: bool = False,
) -> torch.Tensor:
    """Initial prototypes: per-class mean feature over every labelled slice of ``loader``.

    Runs ``model`` in eval mode under ``torch.no_grad`` (its previous train/eval mode is
    restored afterwards); ``model(image)`` must return ``(features, aux_logits,
    main_logits)``. Labels are downsampled to feature resolution by nearest neighbour;
    per-class sums (float64, on CPU) and counts are accumulated over the whole set, so
    the result is the global mean, not a mean of batch means.

    Args:
        model: the (warm-up) segmenter, already on ``device``.
        loader: iterable of ``(image (B,1,H,W), label (B,H,W))`` batches (extra items
            are ignored).
        num_classes: K.
        device: where images are sent and where the result is returned.
        amp: run the model under bfloat16 autocast (features are summed in float32+).
    Returns:
        (K,C) float32 prototypes on ``device``.
    Raises:
        ValueError: if the loader is empty or some class has no pixel at feature
            resolution (naming the class).
    """
    device = torch.device(device)
    was_training = model.training
    sums = None
    counts = torch.zeros(num_classes, dtype=torch.int64)
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                image, label = batch[0].to(device), batch[1].to(device)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    features = model(image)[0]
                small = downsample_labels(label, features.shape[-2:])
                s, n = class_feature_sums(features, small, num_classes)
                sums = s.double().cpu() if sums is None else sums + s.double().cpu()
                counts += n.cpu()
    finally:
        model.train(was_training)
    if sums is None:
        raise ValueError("init_prototypes: the loader yielded no batch")
    missing = [k for k in range(num_classes) if counts[k] == 0]
    if missing:
        names = ", ".join(f"class {k}" for k in missing)
        raise ValueError(
            f"init_prototypes: no labelled pixel of {names} at feature resolution in the "
            f"loader's data (a class can also vanish when labels are downsampled by "
            f"nearest neighbour); cannot initialise its prototype"
        )
    return (sums / counts[:, None].double()).to(device=device, dtype=torch.float32)
