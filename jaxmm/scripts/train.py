"""Train a jaxmm model: `python train.py --config configs/demo.py --workdir runs/demo`.

Any config value can be overridden (`--config.optim.lr=3e-4`); running the same command again
resumes from the workdir's latest checkpoint. An expected error (a mistyped data.root, a bad
CSV or image) prints one `error:` line; `--verbose` adds the traceback. With a two-stage config,
`--stage=text` and `--stage=image` train the two stage-1 towers in separate processes (at once, on
two devices).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from jaxmm import cli
from jaxmm import config as config_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config",
  None,
  "A config file, or a shipped config's name (demo, own_data, best, ...: jaxmm/configs).",
  lock_config=True,
)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the vocabulary go.")
flags.DEFINE_enum(
  "stage",
  None,
  ["text", "image"],
  "Two-stage configs only: train just this stage-1 tower, e.g. both at once in two "
  "processes; the same command without --stage then reuses them for stage 2.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from jaxmm.recipes import train_and_evaluate  # after flag parsing: keeps --help fast

  cli.check_writable_dir(FLAGS.workdir, "--workdir")  # a file there, say: before any work
  config_lib.setup_logging()
  config_lib.setup_compilation_cache()
  if FLAGS.stage and not FLAGS.config.train.two_stage:
    raise app.UsageError("--stage needs a two-stage config (--config.train.two_stage=True)")
  result = train_and_evaluate(FLAGS.config, FLAGS.workdir, stage=FLAGS.stage)
  if result.get("stopped_by_signal"):
    print(
      f"stopped by signal {result['stopped_by_signal']} at step {result['step']}; checkpoint "
      f"saved in {FLAGS.workdir}: run the same command to resume"
    )
    return
  print(
    f"best {FLAGS.config.train.select_metric}: {result['best_metric']} "
    f"(step {result['best_step']}); workdir: {FLAGS.workdir}"
  )


def run() -> None:
  """The `jaxmm-train` command (and train.py)."""
  config_lib.resolve_config_arg(sys.argv)
  config_lib.check_overrides(sys.argv)
  cli.run(main)


if __name__ == "__main__":
  run()
