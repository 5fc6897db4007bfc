"""Multi-label tagging of your own images + texts: a folder in the plain table layout.

  python train.py --config configs/own_data.py --config.data.root=DIR --workdir runs/mine
  python evaluate.py --workdir runs/mine --csv DIR/test.jsonl --report_dir runs/mine/test
  python predict.py --workdir runs/mine --csv DIR/new.jsonl --out predictions.csv --probs

DIR holds train.jsonl or train.csv with the columns `image` (a path relative to DIR, any depth, or
absolute; JPEG or PNG), `text` and `labels` (label names joined by '|'), and optionally val.* and
test.* in the same shape. Without a val file, 10% of the training rows (data.val_size) are the val
split: early stopping and the late-fusion weights are fitted on it. The label set is the training
file's names, sorted (--config.data.labels='("cat", "dog")' fixes it); it is saved as labels.json
in the workdir and names the per-class report rows and the predictions. Other column names or
separator: --config.data.columns.labels=tags --config.data.label_sep=';'.

Ablations: --config.model.mode=image (image tower alone) / --config.model.mode=text (text alone).

The recipe is configs/best.py's, the strongest that trains on a 2-core CPU: a text classifier
(Bi-LSTM over FastText vectors trained on the training texts) and an image classifier (half-width
ResNet-18 at 64 px) trained apart, then a per-class logistic mixing of their logits fitted on val,
so a branch that knows nothing of a label gets no weight for it; each row gets the label set of
highest expected F1 (no threshold to tune). Unlike best.py, each tower stops after 4 epochs
without progress on val, so the run's length follows the data: on 10,000 COMP5329 records (64 px)
it took 7 min on 2 CPU cores beside another run, held-out samples-F1 0.860 (TF-IDF on the same
split: 0.843, 0.848 with the expected-F1 rule). There the from-scratch image tower sat at the label
prior and stopped after 5 epochs, and the text decided: best.py's 24 image epochs add 0.002-0.004
for 30 more minutes. Measured: benchmarks/RESULTS.md, "Your own data". On a GPU, raise
data.image_size (128), model.image.num_filters (64) and train.early_stopping_patience, as
configs/best_gpu.py does.
"""

from jaxmm.configs import best


def get_config():
  c = best.get_config()
  c.data.root = ""  # required: --config.data.root=DIR
  c.data.layout = "auto"
  c.data.split = "random"
  c.data.val_size = 0.1
  c.data.limit = 0
  c.train.update(epochs=24, early_stopping_patience=4)
  return c
