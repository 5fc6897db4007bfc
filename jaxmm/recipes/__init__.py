"""Recipes: how a config is trained, above the loop. `train_and_evaluate(config, workdir)` picks
the standard recipe (one model, one fit) or the two-stage one (`train.two_stage`)."""

from __future__ import annotations

from jaxmm.recipes import standard, two_stage


def train_and_evaluate(config, workdir: str, *, stage: str | None = None) -> dict:
  """Trains (or resumes) `config` in `workdir`; `stage` ('text' | 'image') runs only that
  stage-1 tower of a two-stage config."""
  if config.train.two_stage:
    if stage:
      return two_stage.train_stage1_only(config, workdir, stage)
    return two_stage.train_and_evaluate(config, workdir)
  if stage:
    raise ValueError("--stage needs a two-stage config (--config.train.two_stage=True)")
  return standard.train_and_evaluate(config, workdir)


__all__ = ["train_and_evaluate"]
