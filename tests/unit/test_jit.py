"""emu.jit: every kernel is cached under a directory named after all the project's sources."""

import shutil
from pathlib import Path

import numba

import emu.jit as jit
from cpus import sock


def test_numba_caches_into_the_versioned_directory():
    assert numba.config.CACHE_DIR == str(jit.CACHE_DIR)
    assert jit.CACHE_DIR.name == jit.source_digest()
    sock.warm()                                  # compiled or loaded: either way on disk
    assert any(jit.CACHE_DIR.rglob("*.nbi"))


def test_a_change_to_any_source_file_changes_the_directory(tmp_path, monkeypatch):
    for pkg in jit._PACKAGES:
        shutil.copytree(Path(jit._ROOT) / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(jit, "_ROOT", tmp_path)
    before = jit.source_digest()
    assert before == jit.source_digest()
    counters = tmp_path / "emu" / "counters.py"
    counters.write_text(counters.read_text() + "\n# a new slot\n")
    assert jit.source_digest() != before


def test_the_cache_root_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EMU_NUMBA_CACHE", str(tmp_path / "c"))
    assert jit.cache_dir() == tmp_path / "c" / jit.source_digest()
    monkeypatch.delenv("EMU_NUMBA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert jit.cache_dir() == tmp_path / "x" / "emu" / "numba" / jit.source_digest()
