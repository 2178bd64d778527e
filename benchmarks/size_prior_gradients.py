"""How hard ``loss.size_prior`` pulls against the segmentation loss, on a trained network.

    python benchmarks/size_prior_gradients.py RUN/final.pt PREPARED_SOURCE PREPARED_TARGET [--band 1.5]

Label-free on the target. The network (train mode, as in training) gives the running class
shares over 64 random target slices (16 at a time); then, for three batches of 4, the
gradient norm over all weights of the source segmentation loss and of the size prior's
penalty at weight 1 (the batch entering the running estimate with weight 4/64, as in
training). Their ratio is what a weight w multiplies. Seed 0, one thread.
"""
import argparse
from pathlib import Path

import torch

from mpscl.adapt.class_prior import class_shares
from mpscl.config import config_from_dict
from mpscl.data import SliceDataset
from mpscl.losses.segmentation import segmentation_loss
from mpscl.losses.size_prior import band_penalty, mixed_shares
from mpscl.models import build_segmenter


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("source", type=Path)
    ap.add_argument("target", type=Path)
    ap.add_argument("--band", type=float, default=1.5)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    ck = torch.load(a.checkpoint, weights_only=False)
    src, trg = SliceDataset(a.source), SliceDataset(a.target, labelled=False)
    k = len(ck["classes"])
    model = build_segmenter(config_from_dict(ck["config"]).model, k)
    model.load_state_dict(ck["model"])
    model.train()
    prior = torch.tensor(class_shares(src.labels.numpy(), k))
    g = torch.Generator().manual_seed(0)
    params = list(model.parameters())

    def norm(loss):
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.sqrt(sum((x.float() ** 2).sum() for x in grads if x is not None)).item()

    with torch.no_grad():  # 64 slices (or all there are), 16 at a time
        idx = torch.randperm(len(trg.images), generator=g)[:64]
        running = sum(torch.softmax(model(trg.images[idx[i:i + 16]])[-1].float(), 1).sum((0, 2, 3))
                      for i in range(0, len(idx), 16))
        running = running / running.sum()
    print("classes:", ", ".join(ck["classes"]))
    print("running target share / source share:", " ".join(f"{v:.2f}" for v in (running / prior).tolist()))
    print("| batch | seg loss | its grad norm | penalty | its grad norm | ratio |\n|---|---|---|---|---|---|")
    for b in range(3):
        i = torch.randperm(len(src.images), generator=g)[:4]
        j = torch.randperm(len(trg.images), generator=g)[:4]
        seg = segmentation_loss(model(src.images[i])[-1], src.labels[i].long())
        probs = torch.softmax(model(trg.images[j])[-1].float(), 1)
        pen = band_penalty(mixed_shares(probs, running, probs.detach().mean((0, 2, 3)), 4, 64.0), prior, a.band)
        gs, gp = norm(seg), norm(pen)
        print(f"| {b + 1} | {seg.item():.3f} | {gs:.3f} | {pen.item():.3f} | {gp:.3f} | {gp / max(gs, 1e-12):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
