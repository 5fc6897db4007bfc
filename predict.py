"""Predict with a trained workdir: the `jaxmm-predict` command from a checkout.

python predict.py --help    (the flags and examples: jaxmm/scripts/predict.py)
"""

from jaxmm.scripts.predict import run

if __name__ == "__main__":
  run()
