"""Measurement: time (:mod:`~zoo.bench.timing`, one training step and one timer), memory
(:mod:`~zoo.bench.memory`) and multiply-accumulates (:mod:`~zoo.bench.complexity`) of any model;
the comparison table (:mod:`~zoo.bench.compare`) and the side-by-side benchmark against
torchvision/timm (:mod:`~zoo.bench.reference`) that ``evaluate.py`` runs; and benchmark scripts,
``python -m zoo.bench.NAME``, whose results go to docs/."""
