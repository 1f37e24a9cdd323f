"""Evaluate, compare, benchmark and analyse: ``python evaluate.py task=eval ckpt_path=...``."""

from zoo.tasks.cli import dispatch_task, run

if __name__ == "__main__":
    run(dispatch_task, "evaluate")
