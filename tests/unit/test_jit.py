"""emu.jit / emu.kcache: one versioned cache, a registry of every kernel, warm() covers it."""

import shutil
from pathlib import Path

import numba
import pytest

import emu.jit as jit
import emu.kcache as kcache

pytestmark = pytest.mark.compiled


def test_numba_caches_into_the_versioned_directory():
    assert numba.config.CACHE_DIR == str(jit.CACHE_DIR)
    assert jit.CACHE_DIR.name == kcache.source_digest()
    jit.warm_all()                               # compiled or loaded: either way on disk
    assert any(jit.CACHE_DIR.rglob("*.nbi"))


def test_warm_all_covers_every_registered_kernel():
    jit.import_all()
    assert len(jit.REGISTRY) >= 15
    jit.warm_all()
    cold = [jit.name_of(d) for d in jit.REGISTRY if not d.signatures]
    assert not cold, f"kernels no warmer calls: {cold}"


def test_a_change_to_any_source_file_changes_the_directory(tmp_path, monkeypatch):
    for pkg in kcache._PACKAGES:
        shutil.copytree(Path(kcache._ROOT) / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(kcache, "_ROOT", tmp_path)
    before = kcache.source_digest()
    assert before == kcache.source_digest()
    counters = tmp_path / "emu" / "counters.py"
    counters.write_text(counters.read_text() + "\n# a new slot\n")
    assert kcache.source_digest() != before


def test_the_cache_root_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EMU_NUMBA_CACHE", str(tmp_path / "c"))
    assert kcache.cache_dir() == tmp_path / "c" / kcache.source_digest()
    monkeypatch.delenv("EMU_NUMBA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert kcache.cache_dir() == tmp_path / "x" / "emu" / "numba" / kcache.source_digest()
