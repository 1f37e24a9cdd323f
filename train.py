"""Train any zoo model: ``python train.py model=cliquenet`` (configs in conf/train.yaml)."""

from zoo.tasks.cli import run, train_or_study

if __name__ == "__main__":
    run(train_or_study, "train")
