"""One path layer for every path a user gives: local files and `gs://` (any fsspec URI).

Everything the project reads or writes on a user path (workdir, checkpoints, events,
config.json, TFRecord files and their offset indexes, eval_files, class_weights_file,
init_from, predict's and the converters' files, the report tool) goes through these
functions, which are `etils.epath` underneath (the layer Orbax uses); validation
checks data_dir, folder: roots and the rest through them too. Read by other
libraries: tfds datasets (data_dir) and folder: images (TensorFlow's file system),
ArrayRecord files (the array_record package, local files only).

Remote paths. etils.epath sends `gs://` to TensorFlow's gfile whenever TensorFlow is
installed, and TensorFlow's GCS client cannot be pointed at an emulator (it ignores
STORAGE_EMULATOR_HOST). Importing this module therefore sets `EPATH_USE_TF=false`
(unless the user set EPATH_USE_TF), so epath uses fsspec's gcsfs, which honours
STORAGE_EMULATOR_HOST and the usual Google credentials, with gcsfs' listing cache off
(listings must show what other processes wrote). Import it before any remote path is
used (main.py does, first). Orbax's array data goes through TensorStore,
which reads TENSORSTORE_GCS_HTTP_URL for an emulator.

Local paths are expanded (`~`) and made absolute; remote ones are kept as written.
"""
from __future__ import annotations

import logging as _pylogging
import os
import shutil
import threading
from typing import Iterator, Optional, Union

os.environ.setdefault("EPATH_USE_TF", "false")
# gcsfs logs a warning per bucket when it cannot ask for the bucket's type (always
# against an emulator or without the storage-control API); it then works as usual.
_pylogging.getLogger("gcsfs").setLevel(_pylogging.ERROR)

from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position
import fsspec.config  # pylint: disable=g-import-not-at-top,wrong-import-position

# gcsfs caches directory listings forever by default, so steps or event files written
# by another process (another host of a pod, or Orbax's TensorStore in this one) would
# stay invisible to this one: listings are always asked of the bucket.
for _protocol in ("gs", "gcs"):
  fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)

PathLike = Union[str, os.PathLike]
# Seconds a remote path's first check may take before it is reported unreachable.
REACH_TIMEOUT_S = 10.0
_REACHED: set[str] = set()  # Buckets that answered (asked once per process).


def is_remote(path: PathLike) -> bool:
  """Whether `path` is a URI (gs://, s3://, ...) rather than a local path."""
  return "://" in os.fspath(path)


def resolve(path: PathLike) -> str:
  """The path as a string: local ones expanded and absolute, remote ones as given."""
  path = os.fspath(path)
  if is_remote(path):
    return path.rstrip("/") if not path.endswith("://") else path
  return os.path.abspath(os.path.expanduser(path))


def Path(path: PathLike) -> epath.Path:  # pylint: disable=invalid-name
  """An epath.Path for a user path (resolved as `resolve` does)."""
  return epath.Path(resolve(path))


def join(path: PathLike, *parts: str) -> str:
  return str(Path(path).joinpath(*parts))


def parent(path: PathLike) -> str:
  return str(Path(path).parent)


def basename(path: PathLike) -> str:
  return Path(path).name


def exists(path: PathLike) -> bool:
  return Path(path).exists()


def isdir(path: PathLike) -> bool:
  return Path(path).is_dir()


def isfile(path: PathLike) -> bool:
  p = Path(path)
  return p.exists() and not p.is_dir()


def listdir(path: PathLike) -> list[str]:
  """Names of the entries of a directory (sorted)."""
  return sorted(p.name for p in Path(path).iterdir())


def makedirs(path: PathLike) -> None:
  Path(path).mkdir(parents=True, exist_ok=True)


def glob(pattern: PathLike) -> list[str]:
  """Sorted paths matching a glob (`*`, `?`, `[..]` in any component after the
  first fixed directory)."""
  pattern = resolve(pattern)
  parts = pattern.split("/")
  first = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")),
               None)
  if first is None:
    return [pattern] if exists(pattern) else []
  root = "/".join(parts[:first]) or "/"
  if is_remote(pattern) and first <= 2:  # A wildcard in the bucket name.
    return []
  if not isdir(root):
    return []
  return sorted(str(p) for p in Path(root).glob("/".join(parts[first:])))


def open(path: PathLike, mode: str = "r"):  # pylint: disable=redefined-builtin
  """A file object (binary with 'b' in mode). Remote writes land when it closes."""
  return Path(path).open(mode)


def read_bytes(path: PathLike) -> bytes:
  return Path(path).read_bytes()


def read_text(path: PathLike) -> str:
  return Path(path).read_text()


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes a whole file (a remote object is written in one piece)."""
  Path(path).write_bytes(data)


def write_text(path: PathLike, text: str) -> None:
  Path(path).write_text(text)


class RangeReader:
  """Positioned reads of one file, safe from several threads: `os.pread` on a local
  file; on a remote one, one ranged request per read (fsspec's `cat_file`, the
  filesystem epath uses), without the read-ahead of a file object."""

  def __init__(self, path: PathLike):
    self.path = resolve(path)
    if is_remote(self.path):
      import fsspec  # pylint: disable=import-outside-toplevel
      self._fs, self._key = fsspec.core.url_to_fs(self.path)
      self._fd = None
    else:
      self._fd = os.open(self.path, os.O_RDONLY)

  def read(self, offset: int, length: int) -> bytes:
    if self._fd is not None:
      return os.pread(self._fd, length, offset)
    return self._fs.cat_file(self._key, start=offset, end=offset + length)

  def close(self) -> None:
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None

  def __del__(self):
    try:
      self.close()
    except OSError:
      pass


def size(path: PathLike) -> int:
  return int(Path(path).stat().length)


def stat_key(path: PathLike) -> tuple[int, int]:
  """(size, modification time in whole seconds): what a cache built from the file
  records to know whether the file changed since."""
  info = Path(path).stat()
  return int(info.length), int(info.mtime)


def walk_files(root: PathLike) -> Iterator[str]:
  """Every file under a directory (recursively), as full paths (gs://... for remote
  ones; epath's own walk drops the scheme on gcsfs)."""
  for child in sorted(Path(root).iterdir()):
    if child.is_dir():
      yield from walk_files(str(child))
    else:
      yield str(child)


def move(source: PathLike, target: PathLike) -> None:
  """Moves a file or a directory tree. Remote: copies every object, then deletes the
  source (an object store has no rename); the copy is complete before anything is
  deleted, so an interrupted move leaves the source intact."""
  source, target = resolve(source), resolve(target)
  if not is_remote(source) and not is_remote(target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(source, target)
    return
  src = Path(source)
  if not src.is_dir():
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    src.copy(Path(target), overwrite=True)
    src.unlink()
    return
  prefix = str(src)
  for file in walk_files(source):
    dest = Path(target + file[len(prefix):])
    dest.parent.mkdir(parents=True, exist_ok=True)
    Path(file).copy(dest, overwrite=True)
  src.rmtree()


def check_reachable(path: PathLike, what: str,
                    timeout_s: float = REACH_TIMEOUT_S) -> Optional[str]:
  """None when a remote path's bucket can be asked about within `timeout_s`, else one
  line naming `what` (e.g. "--workdir = 'gs://b/run'") and what to do. Local paths
  always pass."""
  if not is_remote(path):
    return None
  path = resolve(path)
  scheme, rest = path.split("://", 1)
  bucket = f"{scheme}://{rest.split('/')[0]}"
  if bucket in _REACHED:
    return None
  # Asked from a daemon thread: a client retrying an unreachable endpoint for minutes
  # neither holds up the answer nor the exit of a process that stops on it.
  answer: dict = {}
  def ask():
    try:
      answer["found"] = Path(bucket).exists()
    except Exception as e:  # pylint: disable=broad-except
      answer["error"] = e
  thread = threading.Thread(target=ask, daemon=True, name="check_reachable")
  thread.start()
  thread.join(timeout_s)
  if thread.is_alive():
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    return (f"{what}: bucket {bucket} did not answer within {timeout_s:.0f} s"
            + (f" (STORAGE_EMULATOR_HOST={emulator}: is the emulator running?)"
               if emulator else "; check the network and the bucket name") + ".")
  if "error" in answer:
    e = answer["error"]
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    hint = ("; set credentials with `gcloud auth application-default login` or "
            "GOOGLE_APPLICATION_CREDENTIALS" if "credential" in reason.lower() else "")
    return f"{what}: cannot reach {bucket} ({type(e).__name__}: {reason}){hint}."
  if not answer["found"]:
    return (f"{what}: bucket {bucket} does not exist (or these credentials cannot see "
            "it); create it or fix the name.")
  _REACHED.add(bucket)
  return None
