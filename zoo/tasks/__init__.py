"""The commands: one module per task, each a short list of steps from a composed config to results.

``train.py`` runs :mod:`zoo.tasks.train` (or a study: :mod:`zoo.tasks.shortcut`); ``evaluate.py``
runs the module named by ``task.fn`` (conf/task/*.yaml): :mod:`~zoo.tasks.eval`,
:mod:`~zoo.tasks.recalibrate`, :mod:`~zoo.tasks.compare`, :mod:`~zoo.tasks.benchmark`,
:mod:`~zoo.tasks.landscape`, :mod:`~zoo.tasks.hessian`, :mod:`~zoo.tasks.robustness`,
:mod:`~zoo.tasks.corrections`, :mod:`~zoo.tasks.corrections_study` and
:mod:`~zoo.tasks.gradcheck`. This is the only layer below the entry points that reads a config:
the algorithms (``zoo.analysis``, ``zoo.evaluation``, ``zoo.flows``, ``zoo.models``,
``zoo.data``) take models, tensors and plain arguments.
"""
