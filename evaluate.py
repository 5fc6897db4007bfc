"""Evaluate a trained workdir: the `jaxmm-evaluate` command from a checkout.

python evaluate.py --help    (the flags and examples: jaxmm/scripts/evaluate.py)
"""

from jaxmm.scripts.evaluate import run

if __name__ == "__main__":
  run()
