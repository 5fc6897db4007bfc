"""jaxmm: multimodal (image + caption) classification in JAX / Flax NNX.

`jaxmm.load(workdir)` returns a trained workdir's predictor (jaxmm.api); the scripts are
`jaxmm-train`, `jaxmm-evaluate` and `jaxmm-predict` (or train.py, evaluate.py, predict.py).
"""

__all__ = ["Predictor", "load"]


def __getattr__(name: str):
  # Deferred: `import jaxmm.data` and the scripts' --help stay free of JAX until a model is needed.
  if name in __all__:
    from jaxmm import api

    return getattr(api, name)
  raise AttributeError(f"module 'jaxmm' has no attribute {name!r}")
