"""S0 variant: the conv autoencoder's encoder as the image tower + S0's LSTM.

  python train.py --config configs/s0_ae_lstm.py --workdir runs/s0_ae_lstm \\
      --config.data.root=../shared/data/matching-dev

S0 pretrained the autoencoder on reconstruction and transferred its encoder. As shipped the
encoder trains from scratch with the rest; configs/pretrain_autoencoder.py pretrains it, and
--config.init.image_from=<that workdir> starts this config from it. Otherwise as
configs/s0_matching.py, trained as S0's report gives it (s0_matching.as_reported). Results:
benchmarks/RESULTS.md, "Quality on matching (S0 layout)" and "Pretraining".
"""

from ml_collections import config_dict

from jaxmm.configs import s0_matching


def get_config():
  c = s0_matching.get_config()
  s0_matching.as_reported(c)
  c.model.image = config_dict.ConfigDict(
    dict(name="conv_autoencoder", channels=(32, 64, 128), latent_dim=256, conv_impl="auto")
  )
  return c
