"""S0 variant: ResNet-18-style CNN + S0's MLP text tower (emb 32 x 32 tokens -> 1024 -> 512).

  python train.py --config configs/s0_cnn_mlp.py --workdir runs/s0_cnn_mlp \\
      --config.data.root=../shared/data/matching-dev

Same data and head as configs/s0_matching.py, trained as S0's report gives it (s0_matching.
as_reported: half-width CNN, no augmentation or dropout, Adam 2e-4 constant; S0 reported val
accuracy 0.70 for its best model on its own data). Results: benchmarks/RESULTS.md.
"""

from ml_collections import config_dict

from jaxmm.configs import s0_matching


def get_config():
  c = s0_matching.get_config()
  s0_matching.as_reported(c)
  c.model.text = config_dict.ConfigDict(
    dict(name="mlp", embed_dim=32, max_len=32, hidden=(1024, 512), dropout=0.0)
  )
  return c
