"""Train a jaxmm model: the `jaxmm-train` command from a checkout.

python train.py --help    (the flags and examples: jaxmm/scripts/train.py)
"""

from jaxmm.scripts.train import run

if __name__ == "__main__":
  run()
