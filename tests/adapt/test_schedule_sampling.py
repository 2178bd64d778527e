import pytest
import torch

from mpscl.adapt.sampling import batch_indices, sample_generator
from mpscl.adapt.schedule import poly_factor, set_poly_lr, stage_schedule


def test_poly_factor_hand_values():
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5 ** 0.9)  # 0.535887...
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5358867312681466)
    assert poly_factor(100, 100, 0.9) == 0.0
    assert poly_factor(75, 100, 2.0) == pytest.approx(0.0625)


def test_set_poly_lr_keeps_head_ratio():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "initial_lr": 2.5e-4}, {"params": [b], "initial_lr": 2.5e-3}], lr=2.5e-4)
    f = set_poly_lr(opt, 25, 100, 0.9)
    assert f == pytest.approx(0.75 ** 0.9)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.5e-4 * 0.75 ** 0.9)
    assert opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"] == pytest.approx(10.0)


def test_stage_schedule_restart_and_continue():
    # budgets of MPSCL's two stages: warm-up 600, MPSCL 1200
    # restart (authors' code): each stage decays over its own length
    assert stage_schedule([600, 1200], 0, "restart") == (0, 600)
    assert stage_schedule([600, 1200], 1, "restart") == (0, 1200)
    # continue: one decay over 1800; the MPSCL stage's step 0 is global step 600
    assert stage_schedule([600, 1200], 0, "continue") == (0, 1800)
    assert stage_schedule([600, 1200], 1, "continue") == (600, 1800)
    off, tot = stage_schedule([600, 1200], 1, "continue")
    assert poly_factor(off, tot, 0.9) == pytest.approx((1 - 1 / 3) ** 0.9)  # 0.6943...
    assert poly_factor(off + 1200, tot, 0.9) == 0.0
    # single-stage methods are unaffected
    assert stage_schedule([1800], 0, "continue") == stage_schedule([1800], 0, "restart") == (0, 1800)
    with pytest.raises(ValueError, match="restart or continue"):
        stage_schedule([600, 1200], 1, "cosine")


def test_trainer_schedule_follows_the_method_declaration():
    from mpscl import methods
    from mpscl.config import build_config
    cfg = build_config("cpu", sets=["train.warmup_iters=600", "train.iters=1200"])
    mp = methods.get_method("mpscl")
    assert [s.budget for s in mp.stages] == ["warmup_iters", "iters"]
    assert mp.decay_mode(cfg) == "continue" and methods.get_method("advent").decay_mode(cfg) == "restart"


def test_batches_are_a_function_of_seed_and_iteration():
    n, bs = 10, 4
    seq = [batch_indices(1, "source", i, bs, n) for i in range(5)]
    assert seq == [batch_indices(1, "source", i, bs, n) for i in range(5)]
    # the first two and a half batches walk one permutation: every index once per epoch
    flat = [j for b in seq for j in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert batch_indices(1, "target", 0, bs, n) != batch_indices(1, "source", 0, bs, n) or n < 3
    assert seq != [batch_indices(2, "source", i, bs, n) for i in range(5)]


def test_ranks_split_the_global_batch():
    n, bs = 12, 2
    single = batch_indices(3, "source", 4, 2 * bs, n)
    r0 = batch_indices(3, "source", 4, bs, n, rank=0, world_size=2)
    r1 = batch_indices(3, "source", 4, bs, n, rank=1, world_size=2)
    assert r0 + r1 == single


def test_sample_generator_is_reproducible_and_distinct():
    a = torch.rand(3, generator=sample_generator(5, 17, 0))
    assert torch.equal(a, torch.rand(3, generator=sample_generator(5, 17, 0)))
    assert not torch.equal(a, torch.rand(3, generator=sample_generator(5, 18, 0)))  # next iteration
    assert not torch.equal(a, torch.rand(3, generator=sample_generator(5, 17, 1)))  # next sample
    with pytest.raises(ValueError):
        sample_generator(5, 17, -1)


@pytest.mark.parametrize("preset", ["paper-mr2ct", "paper-ct2mr"])
def test_paper_presets_run_the_authors_schedule(preset):
    """Their warm-up decays over MAX_ITERS = 50,000 and is stopped at 4,000; MPSCL restarts."""
    from mpscl.config import build_config
    cfg = build_config(preset)
    assert cfg.mpscl.schedule == "authors"

    def authors_lr_factor(i, max_iter=50000, power=0.9):  # their lr_poly, divided by the base LR
        return (1 - float(i) / max_iter) ** power

    def ours(stage, i):  # MPSCL's stages: warm-up (index 0), MPSCL (index 1)
        budgets = [cfg.train.warmup_iters, cfg.train.iters]
        off, tot = stage_schedule(budgets, {"warmup": 0, "mpscl": 1}[stage], cfg.mpscl.schedule)
        return poly_factor(off + i, tot, cfg.optim.power)

    assert ours("warmup", 0) == authors_lr_factor(0) == 1.0
    assert ours("warmup", 3999) == pytest.approx(authors_lr_factor(3999), rel=1e-12)
    assert ours("warmup", 3999) == pytest.approx(0.9277213, abs=1e-7)  # (46001/50000)^0.9
    assert ours("mpscl", 0) == authors_lr_factor(0) == 1.0
    assert ours("mpscl", 25000) == pytest.approx(0.5 ** 0.9)
    # the warm-up's mean factor: 0.96 (the former "restart" mode decayed it to 0.0006, mean 0.53)
    mean = sum(ours("warmup", i) for i in range(4000)) / 4000
    assert mean == pytest.approx(0.96391, abs=1e-5)
    restart = [poly_factor(i, 4000, 0.9) for i in range(4000)]
    assert restart[-1] == pytest.approx(0.000573, abs=1e-6) and sum(restart) / 4000 == pytest.approx(0.52644, abs=1e-5)


def test_authors_schedule_modes_and_cpu_preset_unchanged():
    from mpscl.config import build_config
    assert stage_schedule([600, 1200], 0, "authors") == (0, 1200)
    assert stage_schedule([600, 1200], 1, "authors") == (0, 1200)
    assert stage_schedule([5, 3], 0, "authors") == (0, 5)  # never past zero mid-warm-up
    assert stage_schedule([1200], 0, "authors") == (0, 1200)  # a single-stage method
    cpu = build_config("cpu")
    assert cpu.mpscl.schedule == "continue"
    # one decay over the 3,600 iterations; the MPSCL stage starts after the 2,400 of the warm-up
    assert stage_schedule([cpu.train.warmup_iters, cpu.train.iters], 1, "continue") == (2400, 3600)
    plain = build_config("cpu-plain")  # the paper's one-third split of the same budget
    assert stage_schedule([plain.train.warmup_iters, plain.train.iters], 1, "continue") == (1200, 3600)
