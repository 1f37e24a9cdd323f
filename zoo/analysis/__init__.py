"""Analysis tools for ``nn.Module``s: loss landscapes, Hessian spectra, robustness, corrections.

- :mod:`zoo.analysis.landscape` — filter-normalized random directions and 1D/2D loss surfaces
  (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").
- :mod:`zoo.analysis.hessian` — top eigenvalues, trace and spectral density of the loss Hessian
  (Yao et al. 2018, "Hessian-based Analysis of Large Batch Training and Robustness to
  Adversaries"; Ghorbani et al. 2019 for the density).
- :mod:`zoo.analysis.robustness` — accuracy under the FGSM and PGD (L∞) attacks of
  :mod:`zoo.analysis.attacks`.
- :mod:`zoo.analysis.corrections` — minimal, stable, symbolic corrections of a piecewise-linear
  network's decision (Zhang, Solar-Lezama, Singh, NeurIPS 2018).

They take a model, batches of tensors and plain arguments; the commands that read a checkpoint and
a config, ``python evaluate.py task=landscape|hessian|robustness|corrections ckpt_path=PATH``,
are in :mod:`zoo.tasks`.
"""
