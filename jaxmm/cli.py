"""What the scripts share: one line for an expected error, the traceback only with --verbose.

A new user's mistakes (a mistyped path, a bad CSV or image, a damaged checkpoint) raise errors
whose message names the culprit and the fix; a traceback around it hides that line.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

flags.DEFINE_bool("verbose", False, "On an error, also print (and log) the full traceback.")
FLAGS = flags.FLAGS
# OSError: missing files, permissions; ValueError: bad values, and the data layer's CsvFormatError
# and ImageDataError (its subclasses, not imported here: --help stays fast); RuntimeError:
# checkpoints that cannot be restored.
EXPECTED = (OSError, ValueError, RuntimeError)
log = logging.getLogger("jaxmm")


def run(main) -> None:
  """absl's app.run(main), with an expected error printed as `error: <message>` (exit status 1).

  `--help` prints the docstring of main's module and lists its flags and --verbose: absl prints
  __main__'s docstring and the key flags of the module named sys.argv[0], and the programs live in
  jaxmm.scripts.*, not in the file run.
  """
  sys.modules["__main__"].__doc__ = sys.modules[main.__module__].__doc__
  by_module = FLAGS.flags_by_module_dict()
  for module in (main.__module__, __name__):
    for flag in by_module.get(module, ()):
      FLAGS.register_key_flag_for_module(sys.argv[0], flag)

  def wrapped(argv):
    try:
      return main(argv)
    except app.UsageError as e:  # absl would print the whole --help before it
      _exit_with_one_line(f"error: {e} (--help lists the flags)")
    except EXPECTED as e:
      if FLAGS.verbose:
        log.error("%s failed", os.path.basename(sys.argv[0]), exc_info=True)
      _exit_with_one_line(f"error: {e}")

  app.run(wrapped)


def _exit_with_one_line(message: str) -> None:
  """Prints `message` on stderr and exits 1 at once, with nothing after it.

  A failed orbax / TensorStore restore leaves reads in flight whose threads print "Event loop is
  closed" tracebacks while the interpreter shuts down: file descriptor 2 goes to /dev/null first,
  and the process ends without that teardown. Nothing of jaxmm's is in flight (checkpoint saves
  wait until they are complete).
  """
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  real_stderr = os.dup(2)
  os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
  os.write(real_stderr, (message + "\n").encode())
  os._exit(1)


def check_writable(path: str, flag: str) -> None:
  """Raises before any work when the file `path` (given by `flag`) cannot be written."""
  if not path:
    raise ValueError(f"{flag} is empty: pass a file name")
  parent = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise IsADirectoryError(
      f"{flag}={path} is a folder: pass a file name, e.g. {flag}={os.path.join(path, 'out')}"
    )
  if not os.path.isdir(parent):
    raise FileNotFoundError(
      f"{flag}={path}: the folder {parent} does not exist; create it or pass {flag} somewhere else"
    )
  writable = os.access(path, os.W_OK) if os.path.exists(path) else os.access(parent, os.W_OK)
  if not writable:
    raise PermissionError(
      f"cannot write {path} (a read-only folder?): pass {flag} with a path you can write"
    )


def check_writable_dir(path: str, flag: str) -> None:
  """As check_writable, for a folder that is created if missing."""
  if not path:
    raise ValueError(f"{flag} is empty: pass a folder")
  target = os.path.abspath(path)
  while not os.path.exists(target):  # the nearest existing folder is the one written to
    target = os.path.dirname(target)
  if not os.path.isdir(target) or not os.access(target, os.W_OK):
    raise PermissionError(
      f"cannot write {path} ({target} is not a writable folder): pass {flag} "
      "with a path you can write"
    )
