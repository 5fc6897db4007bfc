"""Test-size config: a few dozen synthetic examples at 16 px, a width-8 ResNet-18 and a tiny
Bi-LSTM.

python train.py --config configs/tiny.py --workdir runs/tiny
"""

from jaxmm.configs import default


def get_config():
  c = default.get_config()
  c.data.root = "data/synthetic_tiny"
  c.data.image_size = 16
  c.data.max_len = 12
  c.data.val_size = 16
  c.data.num_threads = 1
  c.data.synthetic.update(root=c.data.root, n_train=80, n_test=8, image_size=16)
  c.model.image.num_filters = 8
  c.model.text.update(embed_dim=16, hidden_size=16)
  c.model.head.hidden = (32,)
  c.train.batch_size = 16
  c.train.eval_batch_size = 12  # 16 val examples -> a padded final batch is exercised
  c.train.epochs = 2
  c.train.log_every = 2
  c.train.progress_bar = False
  return c
