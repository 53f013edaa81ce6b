"""Console logging for the command-line entry points (main.py, convert, predict)."""
import logging as std_logging

from absl import logging

# Path fragment of a library's source -> the lowest level of its records that is shown.
# Orbax logs every file it writes at INFO, tfds every dataset it opens, JAX every backend
# it fails to find: the console should be about the run; warnings and errors stay.
QUIET_LIBRARIES = {"/orbax/": std_logging.WARNING, "/tensorflow_datasets/": std_logging.ERROR,
                   "xla_bridge.py": std_logging.WARNING}


class _QuietLibraries(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    for fragment, level in QUIET_LIBRARIES.items():
      if fragment in record.pathname:
        return record.levelno >= level
    return True


def quiet_library_logs() -> None:
  """Drops the libraries' chatter from absl's handler (idempotent)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
