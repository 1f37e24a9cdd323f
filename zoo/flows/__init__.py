"""Continuous normalizing flows (Chen et al. 2018, §4; FFJORD, Grathwohl et al. 2019) beside
ODE-Net: ``CNF.log_prob`` / ``CNF.sample`` on torchdiffeq, exact or Hutchinson divergence, the
2-D toy densities and 8-bit images, and the LightningModule behind ``train.py experiment=cnf_*``."""

from zoo.flows.cnf import CNF, create_cnf, logit_inverse, logit_transform
from zoo.flows.data import FashionMNISTPixels, MNISTPixels, Toy2dDataModule, toy_sample
from zoo.flows.divergence import divergence_exact, divergence_hutchinson, sample_probe
from zoo.flows.dynamics import ConcatSquashNet, HyperNetDynamics
from zoo.flows.module import CNFDensityModule

__all__ = [
    "CNF",
    "CNFDensityModule",
    "ConcatSquashNet",
    "FashionMNISTPixels",
    "HyperNetDynamics",
    "MNISTPixels",
    "Toy2dDataModule",
    "create_cnf",
    "divergence_exact",
    "divergence_hutchinson",
    "logit_inverse",
    "logit_transform",
    "sample_probe",
    "toy_sample",
]
