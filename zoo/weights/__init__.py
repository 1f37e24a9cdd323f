"""Models with their weights: :func:`~zoo.weights.factory.create_model` builds a registered model
and loads a pretrained tag or an exported ``.safetensors`` (:mod:`~zoo.weights.pretrained`);
:mod:`~zoo.weights.checkpoint` reads and writes training checkpoints. Weights are never unpickled
into code (``weights_only=True`` or safetensors)."""
