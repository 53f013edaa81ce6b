"""Waiting for the processes of a multi-process test."""


def wait_all(procs, timeout):
  """Exit codes of every process, each waited for up to `timeout` seconds. Only
  processes still running after that (or after an interruption) are killed: one
  process finishing first must not cut short another's exit (the jax.distributed
  shutdown of a peer can outlast the coordinator by a few seconds)."""
  try:
    return [proc.wait(timeout=timeout) for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
