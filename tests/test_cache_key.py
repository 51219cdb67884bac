"""The key of a data file's cached Arrow copy and tokens is its content: a file rewritten with other bytes of
the same size and its old mtime (cp -p, rsync, git checkout) gets a new key; the same bytes, the same key."""

import os

from llm_magics.data.fingerprint import content_key


def _rewrite(path, text, like):
    path.write_text(text)
    os.utime(path, ns=(like.st_atime_ns, like.st_mtime_ns))  # the mtime put back, as cp -p leaves it


def test_same_size_and_mtime_with_other_content_is_another_key(tmp_path):
    corpus = tmp_path / "corpus.txt"
    first = "The cat sat on the mat. " * 20
    second = "".join(reversed(first))  # same size, other bytes
    corpus.write_text(first)
    before, first_key = corpus.stat(), content_key([corpus])
    _rewrite(corpus, second, before)
    after = corpus.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second_key = content_key([corpus])
    assert second_key != first_key
    _rewrite(corpus, first, before)
    assert content_key([corpus]) == first_key  # the same bytes again: the same key (its cache is reused)


def test_a_folder_key_follows_each_files_name_and_content(tmp_path):
    (tmp_path / "a.txt").write_text("alpha " * 10)
    (tmp_path / "b.txt").write_text("bravo " * 10)
    files = sorted(tmp_path.glob("*.txt"))
    key = content_key(files, tmp_path)
    (tmp_path / "b.txt").write_text("brave " * 10)  # same size
    assert content_key(files, tmp_path) != key
    (tmp_path / "b.txt").write_text("bravo " * 10)
    assert content_key(files, tmp_path) == key
    (tmp_path / "b.txt").rename(tmp_path / "c.txt")  # same bytes under another name: another key
    assert content_key(sorted(tmp_path.glob("*.txt")), tmp_path) != key
