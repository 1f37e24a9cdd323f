"""Train any zoo model: ``python train.py model=cliquenet`` (configs in conf/train.yaml)."""

from zoo.cli import run
from zoo.training.run import train

if __name__ == "__main__":
    run(train, "train")
