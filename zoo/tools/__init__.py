"""Small command-line tools: ``python -m zoo.tools.<name>``."""
