"""Per-class quality of an MPSCL run's self-training labels on labelled VALIDATION cases.

    python benchmarks/self_training_quality.py RUN PREPARED_TARGET --cases 1-5 [--flips]

At the run's end (RUN/final.pt: the student and its EMA prototypes; RUN/mpscl/final.pt: the
mean teacher, when the run keeps one) the labels the MPSCL stage would train on are made for
every slice of the cases, as ``mpscl.self_training*`` of the run's config makes them (teacher
softmax, threshold, agreement with the prototype pseudo-label; ``--flips``: the teacher's
softmax averaged over the flips). Per class: the share of the pixels the labels' network calls
that class which become labels (``kept``, measurable without target labels) and the precision
of those labels against the truth. Both networks run in eval mode (running BatchNorm
statistics), where training computes the student's features with the batch's. A diagnostic for a weight that follows the labels' quality:
does ``kept`` track precision across classes and suites? Use only the providers' validation
cases (LGE 1-5; phantom cases 1-3).

``--label-free PREPARED_SOURCE`` adds, per class, signals that need no target label beside
the labels' precision: the teacher's flip agreement (Dice %, its argmax against that of the
mirrored slices mirrored back), its predicted share over the source labels' share, and the
mean count of 2-D connected pieces per slice holding the class, over the source labels'.
Written for the question of ``benchmarks/README.md`` "Which classes' self-training labels can
be trusted, without labels?": does any of them order the classes' precision across suites?
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from mpscl.adapt.anatomy import filter_labels, learn_rules, violations
from mpscl.adapt.prototypes import pseudo_label
from mpscl.adapt.steps import self_training_labels
from mpscl.checkpoint import load_model
from mpscl.data import PreparedDataset, appearance, context_of, with_context
from mpscl.data.context import case_step, context_mm_of
from mpscl.evaluate.inference import FLIPS, averaged_softmax
from mpscl.evaluate.postprocess import keep_largest_component

from rescore_validation import labels_network


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("target", type=Path)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--flips", action="store_true")
    ap.add_argument("--threshold", type=float, help="instead of the run's mpscl.self_training_threshold")
    ap.add_argument("--gin-agree", type=int, default=0, metavar="N",
                    help="keep labels only where the teacher's argmax on N random-network (GIN) views agrees")
    ap.add_argument("--myo-near-lv", type=int, default=0, metavar="R",
                    help="keep MYO labels only within R pixels of the teacher's LV cavity in the slice")
    ap.add_argument("--anatomy", type=Path, metavar="PREPARED_SOURCE",
                    help="drop labels where the teacher's argmax breaks the anatomical rules learnt from "
                    "this source dataset's labels (mpscl.adapt.anatomy)")
    ap.add_argument("--anatomy-quantile", type=float, default=0.99, metavar="Q",
                    help="the quantile of the source distances the rules' radii and widths take (training: 0.99)")
    ap.add_argument("--proto-margin", type=float, metavar="M",
                    help="keep labels only where the prototype pseudo-label's cosine margin (top1 - top2) "
                    "exceeds M (the run's mpscl.threshold is the self-paced selection's)")
    ap.add_argument("--label-free", type=Path, metavar="PREPARED_SOURCE",
                    help="per class, label-free signals beside the precision (flip agreement, share over "
                    "the source's, connected pieces per slice over the source's)")
    ap.add_argument("--at-warmup", type=Path, metavar="WARMUP_FINAL",
                    help="the labels of the stage's first iteration instead: this warm-up checkpoint as "
                    "student and teacher, with the run's initial prototypes (RUN/prototypes.pt)")
    ap.add_argument("--largest", choices=("2d", "3d"), help="keep labels only in each class's largest piece "
                    "of the argmax, per slice (2d) or per case volume (3d)")
    a = ap.parse_args()
    ds = PreparedDataset(a.target)
    cases = [ds.case(c) for c in ds.select(a.cases)]
    y = torch.cat([torch.from_numpy(c["label"]).long() for c in cases])
    if a.at_warmup:  # the stage starts from the warm-up's weights, its teacher a copy of them
        import yaml
        student, meta = load_model(a.at_warmup)
        meta["config"] = yaml.safe_load((a.run / "config.yaml").read_text())  # the run's stage settings
        meta["prototypes"] = torch.load(a.run / "prototypes.pt", weights_only=False)["prototypes"]
    else:
        student, meta = load_model(a.run / "final.pt")
    # each slice with the neighbours the run was trained with (data.context), within its case
    x = torch.cat([torch.from_numpy(with_context(c["image"], context_of(meta), case_step(context_mm_of(meta), c["meta"])))
                   for c in cases])
    c = meta["config"]["mpscl"]
    teacher, state = (student.eval(), True) if a.at_warmup else labels_network(a.run)
    names = [str(n) for n in meta["classes"]]
    thr = c["self_training_threshold"] if a.threshold is None else a.threshold
    labels = []
    with torch.no_grad():
        for i in range(0, len(x), 16):
            xb = x[i:i + 16]
            probs = averaged_softmax(teacher, xb, torch.device("cpu"), False, FLIPS if a.flips else ((),))
            pl, sel = pseudo_label(student(xb)[0].float(), meta["prototypes"],
                                   c["threshold"] if a.proto_margin is None else a.proto_margin)
            q = self_training_labels(probs, pl, thr, c["self_training_agree"])
            if a.proto_margin is not None:
                up = torch.nn.functional.interpolate(sel[:, None].float(), size=q.shape[-2:], mode="nearest")[:, 0]
                q = torch.where(up > 0, q, torch.full_like(q, -1))
            for v in range(a.gin_agree):
                g = torch.Generator().manual_seed(1000 * i + v)
                view = torch.stack([appearance.random_conv(s, g) for s in xb])
                other = teacher(view)[-1].argmax(1)
                q = torch.where(other == probs.argmax(1), q, torch.full_like(q, -1))
            mirrored = teacher(xb.flip(-1))[-1].argmax(1).flip(-1) if a.label_free else None
            labels.append((probs.argmax(1), q, mirrored))
    pred = torch.cat([p for p, _, _ in labels])
    lab = torch.cat([q for _, q, _ in labels])
    free = label_free_signals(pred.numpy(), torch.cat([m for _, _, m in labels]).numpy(), a.label_free,
                              len(names)) if a.label_free else None
    if a.largest:
        ids = pred.numpy()
        if a.largest == "2d":
            kept_ids = np.stack([keep_largest_component(s, len(names)) for s in ids])
        else:
            bounds = np.cumsum([0] + [len(case["image"]) for case in cases])
            kept_ids = np.concatenate([keep_largest_component(ids[b:e], len(names))
                                       for b, e in zip(bounds[:-1], bounds[1:])])
        lab = torch.where(torch.from_numpy(kept_ids) == pred, lab, torch.full_like(lab, -1))
    if a.anatomy:
        src = PreparedDataset(a.anatomy)
        ys = np.concatenate([src.case(k)["label"] for k in src.select(None)])
        rules = learn_rules(ys, len(names), names, quantile=a.anatomy_quantile)
        print("rules:", "; ".join(rules.describe()))
        broken = violations(torch.from_numpy(ys).long(), rules).numpy()
        print(f"source foreground pixels that break a rule: {100 * broken[ys > 0].mean():.1f}%")
        lab = filter_labels(lab, pred, rules)
    if a.myo_near_lv:
        from scipy.ndimage import binary_dilation
        myo, lv = names.index("MYO"), next(i for i, n in enumerate(names) if n in ("LV", "LVC"))
        near = np.stack([binary_dilation(s == lv, iterations=a.myo_near_lv) for s in pred.numpy()])
        lab = torch.where((lab == myo) & ~torch.from_numpy(near), torch.full_like(lab, -1), lab)
    print(f"{a.run}{' at the warm-up ' + str(a.at_warmup) if a.at_warmup else ''} ({'teacher' if state else 'student'}{', flips' if a.flips else ''}, threshold {thr}), "
          f"cases {a.cases}")
    print("| class | true px | predicted px | kept | precision of kept | recall of kept | true classes of kept "
          "| wrong kept in slices without the class |" + (" flip agreement | share / source | pieces / source |"
                                                          if free else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|---|---|" if free else ""))
    for k, n in enumerate(names):
        p, kept, truth = pred == k, lab == k, y == k
        prec = (kept & truth).sum().item() / max(kept.sum().item(), 1)
        rec = (kept & truth).sum().item() / max(truth.sum().item(), 1)
        truths = torch.bincount(y[kept], minlength=len(names)).tolist()
        share = ", ".join(f"{names[j]} {v / max(sum(truths), 1):.2f}" for j, v in enumerate(truths) if v)
        wrong = kept & ~truth
        absent = wrong[~truth.flatten(1).any(1)].sum().item()  # where the slice's truth has none of it
        print(f"| {n} | {truth.sum().item()} | {p.sum().item()} | {kept.sum().item() / max(p.sum().item(), 1):.2f} | {prec:.2f} | {rec:.2f} "
              f"| {share} | {absent / max(wrong.sum().item(), 1):.2f} |"
              + (" {:.1f} | {:.2f} | {:.2f} |".format(*free[k]) if free else ""))


def pieces_per_slice(ids: np.ndarray, k: int) -> float:
    """Mean count of 2-D connected pieces (8-connected) of class ``k`` over the slices that hold it."""
    from scipy.ndimage import label
    counts = [label(s == k, structure=np.ones((3, 3)))[1] for s in ids if (s == k).any()]
    return float(np.mean(counts)) if counts else float("nan")


def label_free_signals(pred: np.ndarray, mirrored: np.ndarray, source: Path, k: int):
    """Per class: flip agreement (%), predicted share / source share, pieces per slice / source's."""
    from mpscl.data.labelmap import class_shares
    from mpscl.evaluate.label_free import overlap_counts
    src = PreparedDataset(source)
    ys = np.concatenate([src.case(c)["label"] for c in src.select(None)])
    both = overlap_counts(pred, mirrored, k)
    shares, src_shares = class_shares(pred.ravel(), k), class_shares(ys.ravel(), k)
    return [(200.0 * both[c, 0] / max(both[c, 1] + both[c, 2], 1), shares[c] / max(src_shares[c], 1e-12),
             pieces_per_slice(pred, c) / pieces_per_slice(ys, c)) for c in range(k)]


if __name__ == "__main__":
    main()
