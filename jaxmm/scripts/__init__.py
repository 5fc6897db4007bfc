"""The command-line programs: jaxmm-train, jaxmm-evaluate, jaxmm-predict (train.py, evaluate.py
and predict.py in a checkout)."""
