"""One training iteration per method, written to read like docs/METHOD.md.

Each function takes the :class:`~mpscl.adapt.trainer.Trainer` (which owns networks by
name, optimisers and prototypes) and the batches its stage declares (``mpscl.methods``), computes the generator-side losses, calls
backward, and returns the loss terms as tensors. The trainer does the optimiser steps,
the discriminator update, logging and checkpointing.
"""
from __future__ import annotations

from typing import Dict

import torch

from ..evaluate.inference import FLIPS, averaged_softmax
from ..losses import (discriminator_loss, entropy_map, generator_adversarial_loss, mpcl_loss,
                      segmentation_loss)
from ..losses.segmentation import class_counts, weighted_cross_entropy
from ..losses.size_prior import band_penalty, mixed_shares
from .adversarial_gate import discriminator_error
from .anatomy import filter_labels
from .class_mix import class_mix, confident_source_labels, pair_partners
from .class_prior import cap_labels
from .prototypes import class_feature_sums, downsample_labels, ema_update, pseudo_label

Terms = Dict[str, torch.Tensor]


def _seg_terms(t, aux, main, labels, prefix: str) -> Terms:
    """Step 1: class-weighted CE + soft Dice on the main (1.0) and auxiliary (0.1) outputs.

    On several ranks the CE's class weights and normaliser are those of the global batch."""
    kw = _global_batch(t, labels)
    terms = {f"seg_{prefix}": segmentation_loss(main, labels, **kw)}
    if aux is not None and t.cfg.loss.seg_aux > 0:
        terms[f"seg_{prefix}_aux"] = segmentation_loss(aux, labels, **kw)
    return terms


def _consistency_terms(t, main) -> Terms:
    """Beyond the paper (``appearance.consistency``): the source batch holds two randomised
    views of each slice, first halves then second (trainer ``_batch``); the symmetric KL
    divergence between their class distributions, averaged over pixels."""
    if t.cfg.appearance.consistency <= 0:
        return {}
    a, b = torch.log_softmax(main.float(), dim=1).chunk(2)
    kl = (a.exp() - b.exp()) * (a - b)  # KL(p_a||p_b) + KL(p_b||p_a), per class and pixel
    return {"cons_src": 0.5 * kl.sum(dim=1).mean()}


def _global_batch(t, labels) -> Dict:
    """On several ranks: the class counts of the global batch and the number of ranks, which
    the class-weighted CE takes to weigh and normalise as one process would; else nothing."""
    if not t.dist.enabled:
        return {}
    return {"counts": t.dist.all_reduce_sum(class_counts(labels, t.num_classes)),
            "world_size": t.dist.world_size}


def _weighted(t, terms: Terms) -> torch.Tensor:
    w = loss_weights(t.cfg, t.spec)
    if t.adv_gate is not None and "adv" in terms:  # loss.adv_gate: as much as D finds a gap
        gate = t.adv_gate.value
        w["adv"], w["adv_aux"] = w["adv"] * gate, w["adv_aux"] * gate
        t.stats["adv_gate"] = gate
    return sum(w[k] * v for k, v in terms.items() if w.get(k, 0.0) != 0.0)


def _freeze_discriminators(t) -> None:
    """The generator step must not train D (``update_discriminators`` thaws them)."""
    for name in ("disc_main", "disc_aux"):
        if t.nets.get(name) is not None:
            t.nets[name].requires_grad_(False)


def _adversarial_terms(t, aux_t, main_t) -> Terms:
    """Step 2 (generator side): make D take target entropy maps for source ones."""
    d_main, d_aux = t.nets.get("disc_main"), t.nets.get("disc_aux")
    terms = {"adv": generator_adversarial_loss(d_main(entropy_map(main_t)))}
    if aux_t is not None and d_aux is not None:
        terms["adv_aux"] = generator_adversarial_loss(d_aux(entropy_map(aux_t)))
    return terms


def update_discriminators(t, outs_s, outs_t) -> Terms:
    """Discriminators: detached source maps -> 0, target maps -> 1, each term halved."""
    terms = {}
    d_main, d_aux = t.nets.get("disc_main"), t.nets.get("disc_aux")
    for d in (d_main, d_aux):
        if d is not None:
            d.requires_grad_(True)
    pairs = [("d_main", d_main, outs_s[2], outs_t[2])]
    if d_aux is not None and outs_s[1] is not None:
        pairs.append(("d_aux", d_aux, outs_s[1], outs_t[1]))
    for name, disc, ps, pt in pairs:
        with t.autocast():
            out_s = disc(entropy_map(ps.detach()))
            ls = discriminator_loss(out_s, is_target=False)
        ls.backward()
        with t.autocast():
            out_t = disc(entropy_map(pt.detach()))
            lt = discriminator_loss(out_t, is_target=True)
        lt.backward()
        terms[name] = (ls + lt).detach()
        if name == "d_main" and t.adv_gate is not None:  # on the maps D was just shown
            err = t.dist.mean_over_ranks({"e": discriminator_error(out_s, out_t)})["e"]
            t.adv_gate.update(err)
            t.stats["d_error"] = err
    return t.check_finite(terms, "discriminator loss")


def supervised_step(t, x, y) -> Terms:
    """source-only (source labels) and oracle (target labels): segmentation only."""
    with t.autocast():
        _, aux, main = t.model(x)
    terms = _seg_terms(t, aux, main, y, "src")
    if "source" in t.spec.inputs:  # not the oracle's target slices
        terms.update(_consistency_terms(t, main))
    t.backward(terms, _weighted(t, terms))
    return terms


def advent_step(t, xs, ys, xt) -> Terms:
    """AdvEnt (also MPSCL's warm-up): source segmentation + entropy-map adversarial."""
    _freeze_discriminators(t)
    with t.autocast():
        feats_s, aux_s, main_s = t.model(xs)
    terms = {**_seg_terms(t, aux_s, main_s, ys, "src"), **_consistency_terms(t, main_s)}
    adversarial = t.nets.get("disc_main") is not None  # off: the ablation without it
    if not adversarial and t.size_prior is None:  # nothing looks at the target slices
        t.backward(terms, _weighted(t, terms))
        return terms
    with t.autocast():
        _, aux_t, main_t = t.model(xt)
        if adversarial:
            terms.update(_adversarial_terms(t, aux_t, main_t))
    terms.update(_size_prior_terms(t, main_t))
    t.backward(terms, _weighted(t, terms))
    if adversarial:
        terms.update(update_discriminators(t, (feats_s, aux_s, main_s), (None, aux_t, main_t)))
    return terms


def _size_prior_terms(t, main_t) -> Terms:
    """Beyond the paper (``loss.size_prior``): the target predictions' running class shares
    kept within a band around the source labels' (losses/size_prior.py)."""
    sp = t.size_prior
    if sp is None:
        return {}
    probs = torch.softmax(main_t.float(), dim=1)
    slices = probs.shape[0] * t.dist.world_size
    global_shares = t.dist.all_reduce_sum(probs.detach().mean(dim=(0, 2, 3))) / t.dist.world_size
    term = band_penalty(mixed_shares(probs, sp.running, global_shares, slices, sp.window), sp.source, sp.bound)
    sp.update(global_shares, slices)
    return {"size_trg": term}


def update_prototypes_step(t, feats_s, ys) -> None:
    """Step 3: EMA of per-class mean source features (reduced over ranks first)."""
    labels = downsample_labels(ys, feats_s.shape[-2:])
    sums, counts = class_feature_sums(feats_s.detach().float(), labels, t.num_classes)
    sums, counts = t.dist.all_reduce_sum(sums), t.dist.all_reduce_sum(counts)
    t.prototypes = ema_update(t.prototypes, sums, counts, t.cfg.mpscl.momentum)


def mpscl_step(t, xs, ys, xt) -> Terms:
    """MPSCL: steps 1-6 of docs/METHOD.md in order."""
    c = t.cfg.mpscl
    _freeze_discriminators(t)
    with t.autocast():
        feats_s, aux_s, main_s = t.model(xs)
        feats_t, aux_t, main_t = t.model(xt)
    terms = {**_seg_terms(t, aux_s, main_s, ys, "src"), **_consistency_terms(t, main_s)}  # 1
    if t.nets.get("disc_main") is not None:
        with t.autocast():
            terms.update(_adversarial_terms(t, aux_t, main_t))               # 2
    terms.update(_size_prior_terms(t, main_t))  # beyond the paper, off by default
    proj = t.nets.get("projector")
    if proj is not None:  # beyond the paper: contrast (and keep prototypes) in its output space
        with t.autocast():
            feats_s, feats_t = proj(feats_s), proj(feats_t)
        if t.iteration == 0:  # a fresh stage: the warm-up's prototypes, projected
            with torch.no_grad():
                t.prototypes = proj(t.prototypes[:, :, None, None])[:, :, 0, 0].float()
    update_prototypes_step(t, feats_s, ys)                                   # 3
    protos = t.prototypes.detach()
    ys_low = downsample_labels(ys, feats_s.shape[-2:])
    terms["mpcl_src"] = mpcl_loss(feats_s, ys_low, protos, margin=c.margin_src,   # 4 (source)
                                  temperature=c.temp_src, base_temperature=c.base_temp,
                                  variant=c.variant)
    if c.lambda_trg > 0 or c.self_training > 0:
        pl, sel = pseudo_label(feats_t.detach().float(), protos, c.threshold)  # 5
    if c.self_training > 0:
        st_labels, st_pred = _self_training_labels(t, xt, main_t, pl)
        if c.target_contrast_labels == "self-training":  # beyond the paper: the labels' precision
            sel = agreed_selection(sel, pl, st_labels)
    if c.lambda_trg > 0:
        kw = {}
        if t.dist.enabled:  # the masked average of the global batch
            kw = {"mask_total": t.dist.all_reduce_sum(sel.sum().float()),
                  "world_size": t.dist.world_size}
        terms["mpcl_trg"] = mpcl_loss(feats_t, pl, protos, margin=c.margin_trg,  # 4 (target)
                                      temperature=c.temp_trg, base_temperature=c.base_temp,
                                      mask=sel, variant=c.variant, **kw)
        t.stats["selected"] = sel.float().mean().item()
    if c.self_training > 0:
        terms["st_trg"] = _self_training_term(t, xt, main_t, st_labels, st_pred, xs, ys)
    t.backward(terms, _weighted(t, terms))                                   # 6
    if t.nets.get("disc_main") is not None:
        terms.update(update_discriminators(t, (feats_s, aux_s, main_s), (feats_t, aux_t, main_t)))
    return terms


def agreed_selection(selected: torch.Tensor, proto_labels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,h,w) bool: the pixels of ``selected`` (feature resolution) whose prototype
    pseudo-label ``proto_labels`` the self-training ``labels`` (B,H,W, -1 ignored; nearest-
    neighbour downsampled) repeat."""
    return selected & (downsample_labels(labels, selected.shape[-2:]) == proto_labels)


def self_training_labels(probs: torch.Tensor, proto_labels: torch.Tensor, threshold: float,
                         agree: bool, class_fraction: float = 0.0) -> torch.Tensor:
    """(B,H,W) int64 pseudo-labels from class probabilities ``probs`` (B,K,H,W): the argmax
    where the maximum is >= ``threshold``, or, for ``class_fraction`` p > 0, >= the (1 - p)
    quantile of the maxima of the pixels predicted as the same class in the batch (the
    smaller bound wins); with ``agree`` also equal to ``proto_labels`` (B,h,w) upsampled by
    nearest neighbour; -1 (ignored) elsewhere."""
    with torch.no_grad():
        conf, labels = probs.detach().float().max(dim=1)
        keep = conf >= threshold
        if class_fraction > 0:
            for k in torch.unique(labels).tolist():
                of_k = labels == k
                keep |= of_k & (conf >= torch.quantile(conf[of_k], 1.0 - class_fraction))
        if agree:
            up = torch.nn.functional.interpolate(proto_labels[:, None].float(), size=labels.shape[-2:],
                                                 mode="nearest")[:, 0].long()
            keep &= labels == up
    return torch.where(keep, labels, torch.full_like(labels, -1))


@torch.no_grad()
def update_teacher(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """Mean teacher: weights <- m * weights + (1 - m) * student's; buffers (BatchNorm
    statistics) copied from the student."""
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.mul_(momentum).add_(ps.detach(), alpha=1.0 - momentum)
    for bt, bs in zip(teacher.buffers(), student.buffers()):
        bt.copy_(bs)


def _self_training_labels(t, xt, main_t, proto_labels):
    """Beyond the paper: the confident target pseudo-labels (B,H,W; -1 ignored) of the
    self-training term (MPSCLConfig), and the argmax of the network that made them; moves
    the mean teacher one step first."""
    c = t.cfg.mpscl
    teacher = t.nets.get("teacher")
    if teacher is not None:
        if t.iteration == 0:  # a fresh stage: the teacher starts as the warm-up segmenter
            teacher.load_state_dict(t.model.state_dict())
        else:
            update_teacher(teacher, t.model, c.self_training_teacher)
        with torch.no_grad(), t.autocast():
            probs = averaged_softmax(teacher, xt, t.device, False, FLIPS if c.self_training_flips else ((),))
    else:
        probs = torch.softmax(main_t.detach().float(), dim=1)
    labels = self_training_labels(probs, proto_labels, c.self_training_threshold, c.self_training_agree,
                                  c.self_training_class_fraction)
    conf, pred = probs.detach().float().max(dim=1)
    if t.anatomy is not None:
        labels = filter_labels(labels, pred, t.anatomy)
    if t.class_prior is not None:  # the running shares over the global batch, then the cap
        counts = torch.bincount(pred.flatten(), minlength=t.num_classes)[:t.num_classes].float()
        t.class_prior.update(t.dist.all_reduce_sum(counts), pred.shape[0] * t.dist.world_size)
        fractions = t.class_prior.keep_fractions()
        labels = cap_labels(labels, pred, conf, fractions)
        t.stats["st_prior_keep_min"] = float(fractions.min())
    t.stats["st_selected"] = (labels >= 0).float().mean().item()
    # the same share among the pixels the labels' network calls foreground (class > 0): the
    # background dominates st_selected, and label quality matters on the structures
    fg = int((pred > 0).sum())  # labels > 0 are a subset of these pixels
    t.stats["st_selected_fg"] = int((labels > 0).sum()) / max(fg, 1)
    return labels, pred


def _self_training_term(t, xt, main_t, labels, pred, xs, ys) -> torch.Tensor:
    """Beyond the paper: class-weighted CE on the confident target pseudo-labels ``labels``
    (``_self_training_labels``); with ``self_training_mix`` on target slices with source
    classes pasted in (source ``xs``, ``ys``: the batch's first views)."""
    c = t.cfg.mpscl
    teacher = t.nets.get("teacher")
    logits = main_t
    if c.self_training_mix:
        n = len(xt)
        t.stats["st_labels_fg"] = (labels > 0).float().mean().item()
        xt, labels = _mixed_slices(t, xs[:n], ys[:n], xt, labels, pred, teacher)
        t.stats["st_mixed_fg"] = (labels > 0).float().mean().item()
    if c.self_training_view == "randomised" or c.self_training_mix:  # main_t saw the clean slice only
        view = t.target_view(xt, t.iteration) if c.self_training_view == "randomised" else xt
        with t.autocast():
            _, _, logits = t.model(view)
    return weighted_cross_entropy(logits, labels, class_scale=t.st_class_scale, **_global_batch(t, labels))


def _mixed_slices(t, xs, ys, xt, labels, pred, teacher):
    """The target slices ``xt`` (pseudo-labels ``labels``, teacher's argmax ``pred``) with
    classes pasted in as ``mpscl.self_training_mix_pasted`` says (adapt/class_mix.py)."""
    c = t.cfg.mpscl
    if c.self_training_mix_pasted == "target":
        p = pair_partners(len(xt)).to(xt.device)
        return class_mix(xt[p], labels[p], xt, labels, t.mix_masks(pred[p], t.iteration))
    masks = t.mix_masks(ys, t.iteration)  # the same classes whichever labels they carry
    if c.self_training_mix_pasted == "source-confident":
        with torch.no_grad(), t.autocast():
            probs = averaged_softmax(teacher, xs, t.device, False, ((),))
        ys = confident_source_labels(probs, ys, c.self_training_threshold)
    return class_mix(xs, ys, xt, labels, masks)


def size_prior_weight(cfg, stage=None) -> float:
    """The size prior's weight in ``stage`` (a ``methods.Stage``): ``mpscl.size_prior`` in an
    MPSCL stage when it is set, else ``loss.size_prior``."""
    if stage is not None and stage.prototypes and cfg.mpscl.size_prior > 0:
        return cfg.mpscl.size_prior
    return cfg.loss.size_prior


def loss_weights(cfg, stage=None) -> Dict[str, float]:
    """The weight of every generator-side term (step 6) in ``stage`` (None: any but MPSCL's)."""
    return {
        "seg_src": cfg.loss.seg_main, "seg_src_aux": cfg.loss.seg_aux,
        "adv": cfg.loss.adv_main, "adv_aux": cfg.loss.adv_aux,
        "mpcl_src": cfg.mpscl.lambda_src, "mpcl_trg": cfg.mpscl.lambda_trg,
        "st_trg": cfg.mpscl.self_training, "cons_src": cfg.appearance.consistency,
        "size_trg": size_prior_weight(cfg, stage),
    }

