"""xception_jax/paths.py on local paths (gs:// is exercised in tests/test_gcs.py)."""
import glob
import os

import pytest

from xception_jax import paths


def test_importing_the_layer_keeps_gs_away_from_tensorflow():
  # etils.epath would send gs:// to TensorFlow's gfile, which cannot reach an emulator.
  assert os.environ["EPATH_USE_TF"].lower() in ("false", "0", "no", "f")


def test_resolve_keeps_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.resolve("gs://bucket/run/") == "gs://bucket/run"
  assert paths.resolve("run") == str(tmp_path / "run")
  assert paths.resolve("~/x") == os.path.expanduser("~/x")
  assert paths.join("gs://bucket/run", "checkpoints", "4") == "gs://bucket/run/checkpoints/4"
  assert paths.parent("gs://bucket/run/checkpoints") == "gs://bucket/run"
  assert paths.is_remote("gs://b/x") and not paths.is_remote(str(tmp_path))


@pytest.mark.parametrize("pattern", ["*.tfrecord", "a/*/x-?.bin", "a/b*/*", "none-*",
                                     "a/[bc]/x-1.bin", "a/b/x-1.bin"])
def test_glob_matches_the_standard_library(tmp_path, pattern):
  for name in ["t1.tfrecord", "t2.tfrecord", "t.txt", "a/b/x-1.bin", "a/b/x-22.bin",
               "a/c/x-3.bin", "a/bb/y"]:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(name.encode())
  full = str(tmp_path / pattern)
  assert paths.glob(full) == sorted(glob.glob(full))


def test_move_keeps_every_byte_and_removes_the_source(tmp_path):
  source = tmp_path / "checkpoints" / "6"
  files = {"variables/d/0": b"\x00" * 100, "variables/meta": b"m", "model/metadata": b"{}"}
  for name, data in files.items():
    (source / name).parent.mkdir(parents=True, exist_ok=True)
    (source / name).write_bytes(data)
  target = tmp_path / "checkpoints_damaged" / "6-x"
  paths.move(str(source), str(target))
  assert not source.exists()
  assert {os.path.relpath(f, target): paths.read_bytes(f)
          for f in paths.walk_files(str(target))} == files


def test_stat_key_changes_with_the_file(tmp_path):
  path = tmp_path / "f"
  path.write_bytes(b"abc")
  os.utime(path, (100, 100))
  assert paths.stat_key(str(path)) == (3, 100)
  path.write_bytes(b"abcd")
  os.utime(path, (200, 200))
  assert paths.stat_key(str(path)) == (4, 200)


def test_range_reader_reads_positioned_bytes(tmp_path):
  path = tmp_path / "f"
  path.write_bytes(bytes(range(256)))
  reader = paths.RangeReader(str(path))
  assert reader.read(10, 5) == bytes(range(10, 15))
  assert reader.read(250, 6) == bytes(range(250, 256))
  reader.close()


def test_local_paths_need_no_reachability_check(tmp_path):
  assert paths.check_reachable(str(tmp_path), "--workdir") is None
