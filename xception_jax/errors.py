"""The project's one-line configuration error (main.py prints it and exits 2)."""


class ConfigError(ValueError):
  """A config field, file or workdir that cannot work; the message is one line."""
