"""A new method is one step function and one registry entry: everything below lives in this
file, and the trainer, pipeline, checkpoints, schedule and command line take it as it is.

The toy: source segmentation + entropy minimisation on the target, plus a network of its own
(a 1x1 domain classifier on detached logits, with its own optimiser) so that checkpointing,
resuming and the gradient checks are seen to loop over what the method declares.
"""
import json

import pytest
import torch
from torch.nn import functional as F

from mpscl import methods
from mpscl.adapt.pipeline import train
from mpscl.checkpoint import load_checkpoint, load_model
from mpscl.cli import build_parser
from mpscl.config import build_config
from mpscl.losses import entropy_map, segmentation_loss

TINY = ["data.size=48", "data.batch_size=2", "train.iters=3", "train.warmup_iters=2",
        "train.log_every=1", "train.checkpoint_every=2", "train.threads=1"]


def domain_head(cfg, num_classes):
    return torch.nn.Conv2d(num_classes, 1, kernel_size=1)


def domain_sgd(cfg, modules):
    opt = torch.optim.SGD([p for m in modules for p in m.parameters()], lr=0.01, momentum=0.9)
    for g in opt.param_groups:
        g["initial_lr"] = 0.01
    return opt


def entropy_min_step(t, xs, ys, xt):
    with t.autocast():
        _, _, main_s = t.model(xs)
        _, _, main_t = t.model(xt)
    head = t.nets["domain_head"]
    dom = torch.cat([head(main_s.detach().float()).mean((1, 2, 3)), head(main_t.detach().float()).mean((1, 2, 3))])
    truth = torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))]).to(dom.device)
    terms = {"seg_src": segmentation_loss(main_s.float(), ys),
             "ent": entropy_map(main_t.float()).sum(1).mean(),
             "domain": F.binary_cross_entropy_with_logits(dom, truth)}
    t.backward(terms, terms["seg_src"] + 0.1 * terms["ent"] + terms["domain"])
    return terms


TOY = methods.Method("entropy-min", (methods.Stage(
    "entropy-min", entropy_min_step, inputs=("source", "target"),
    networks={"domain_head": domain_head},
    optimisers={**methods.SEGMENTER_SGD,
                "opt_domain": methods.Optimiser(("domain_head",), domain_sgd)}),),
    help="toy: source segmentation + target entropy minimisation")


@pytest.fixture
def toy():
    methods.register(TOY)
    yield TOY
    methods.unregister(TOY.name)


@pytest.mark.slow
def test_toy_method_trains_end_to_end(toy, tiny_phantom, tmp_path):
    assert "entropy-min" in build_parser().parse_args(
        ["train", "--source", "s", "--target", "t", "--out", "o", "--method", "entropy-min"]).method
    cfg = build_config("cpu", sets=TINY)
    run = tmp_path / "run"
    final = train(tiny_phantom["mr"], tiny_phantom["ct"], "entropy-min", cfg, run, progress=False)
    recs = [json.loads(line) for line in (run / "entropy-min" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in recs] == [1, 2, 3]
    assert {"seg_src", "ent", "domain"} <= set(recs[-1])
    ckpt = load_checkpoint(run / "entropy-min" / "final.pt")
    assert ckpt["method"] == "entropy-min" and ckpt["iteration"] == 3
    assert set(ckpt["domain_head"]) == {"weight", "bias"} and ckpt["opt_domain"]["state"]
    assert "disc_main" not in ckpt and "opt_d" not in ckpt  # only what the method declares
    model, _ = load_model(final)  # evaluate/predict take it like any other method's
    assert not model.training

    # its last checkpoint loads back into a trainer of the method (every declared part)
    last = load_checkpoint(run / "entropy-min" / "last.pt")
    (run / "entropy-min" / "final.pt").unlink()
    (run / "final.pt").unlink()
    train(tiny_phantom["mr"], tiny_phantom["ct"], "entropy-min", cfg, run, progress=False)
    again = load_checkpoint(run / "entropy-min" / "final.pt")
    assert last["iteration"] == 3 and torch.equal(again["domain_head"]["weight"], ckpt["domain_head"]["weight"])


def test_registry_refuses_inconsistent_declarations():
    with pytest.raises(ValueError, match="unknown inputs"):
        methods.Stage("x", entropy_min_step, inputs=("source", "labels"))
    with pytest.raises(ValueError, match="not an earlier stage"):
        methods.Method("x", (methods.Stage("a", entropy_min_step, init_from="b"),
                             methods.Stage("b", entropy_min_step)))
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.get_method("mpscl"))
