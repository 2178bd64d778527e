"""Measurements of the package itself: ``speed`` (``mpscl bench-speed``: iterations per
second and memory of the training iteration) and ``compare`` (``mpscl benchmark``: every
method on the same data, budget and seeds). Their results live in ``benchmarks/``."""
