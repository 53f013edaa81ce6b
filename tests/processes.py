"""Running and waiting for the processes of a multi-process test."""
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def xla_flags(device_count: int) -> str:
  """$XLA_FLAGS for a child process with `device_count` CPU devices: this process's
  flags (the suite's optimisation level, conftest.py) plus the device count."""
  own = os.environ.get("XLA_FLAGS", "")
  return f"{own} --xla_force_host_platform_device_count={device_count}".strip()


def rerun_without_xla_cpu_flags(nodeid: str, timeout: float) -> None:
  """Runs the test `nodeid` in a child pytest without the package's XLA:CPU flags
  (xception_jax/xla_cpu.py: under them float64 convolutions run ~150x slower), with
  this process's other flags; fails with the child's output if it fails."""
  from xception_jax import xla_cpu  # pylint: disable=import-outside-toplevel
  own = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in xla_cpu.DEFAULT_FLAGS]
  env = {**os.environ, "XLA_FLAGS": " ".join(own), xla_cpu.DISABLE_ENV: "0"}
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow", nodeid],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      timeout=timeout, check=False)
  assert proc.returncode == 0, f"{nodeid} in a child process:\n{proc.stdout[-5000:]}"
  assert "1 passed" in proc.stdout, proc.stdout[-2000:]


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


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_main(tmp_path, workdir, data_dir, overrides, timeout, num_processes=2, envs=None,
             name="process", program=("main.py",)):
  """Runs `main.py --config=configs/demo.py` as `num_processes` jax.distributed
  processes on localhost (2 CPU devices each) with `--config.KEY=VALUE` for each
  item of `overrides` and process i's extra environment variables `envs[i]`; waits
  for all (`wait_all`), checks that each exited 0 and announced itself ('JAX process
  i of N'), and returns each one's output (also in tmp_path/<name><i>.log).
  `program`: what python runs in place of main.py (e.g. ("-c", SCRIPT) wrapping it),
  given the same arguments."""
  port = free_port()
  flags = [f"--config.{k}={v}" for k, v in overrides.items()]
  procs, logs = [], []
  for i in range(num_processes):
    env = {**os.environ, "XLA_FLAGS": xla_flags(2),
           "PYTHONUNBUFFERED": "1", **(envs[i] if envs else {})}
    logs.append(open(tmp_path / f"{name}{i}.log", "w+"))
    procs.append(subprocess.Popen(
        [sys.executable, *program, "--config=configs/demo.py", f"--workdir={workdir}",
         f"--config.data_dir={data_dir}", f"--coordinator_address=localhost:{port}",
         f"--num_processes={num_processes}", f"--process_id={i}", *flags],
        cwd=ROOT, env=env, stdout=logs[i], stderr=subprocess.STDOUT))
  codes = wait_all(procs, timeout=timeout)
  outputs = []
  for i, (code, log) in enumerate(zip(codes, logs)):
    log.seek(0)
    outputs.append(log.read())
    log.close()
    assert code == 0, f"process {i} failed:\n{outputs[i][-5000:]}"
    assert f"JAX process {i} of {num_processes}" in outputs[i]
  return outputs
