"""xception_jax/metrics.py: the steps' metric collections, without clu.

Checked against clu.metrics (the collections the trainer used before; the reference)
and against NumPy: the same values from the same model outputs, masked and not,
merged over steps; and jit-compatible as a step's output.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clu import metrics as clu_metrics

from xception_jax import metrics


def _clu_train(figures):
  fields = {"loss": clu_metrics.Average.from_output("loss")}
  fields.update({n: clu_metrics.Average.from_output(n) for n in figures})
  fields["grad_norm"] = clu_metrics.Average.from_output("grad_norm")
  fields["learning_rate"] = clu_metrics.LastValue.from_output("learning_rate")
  return clu_metrics.Collection.create(**fields)


def _steps(rng, n):
  return [dict(loss=jnp.float32(rng.normal()), top_1=jnp.float32(rng.uniform()),
               grad_norm=jnp.float32(rng.uniform(1, 2)),
               learning_rate=jnp.float32(rng.uniform()),
               skipped_updates=jnp.int32(i % 2)) for i in range(n)]


def test_train_metrics_equal_clus_over_merged_steps():
  outputs = _steps(np.random.default_rng(0), 4)
  ours_cls, clu_cls = metrics.train_metrics(("top_1",), True), _clu_train(("top_1",))
  ours = clu = None
  for out in outputs:
    a = ours_cls.single_from_model_output(**out)
    b = clu_cls.single_from_model_output(**{k: v for k, v in out.items()
                                            if k != "skipped_updates"})
    ours = a if ours is None else ours.merge(a)
    clu = b if clu is None else clu.merge(b)
  got, want = ours.compute(), clu.compute()
  assert set(got) == set(want) | {"skipped_updates"}
  for name, value in want.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-7, err_msg=name)
  # By hand: averages over the steps, the last learning rate, the summed skips.
  np.testing.assert_allclose(got["loss"], np.mean([float(o["loss"]) for o in outputs]),
                             rtol=1e-6)
  assert float(got["learning_rate"]) == float(outputs[-1]["learning_rate"])
  assert int(got["skipped_updates"]) == 2


@pytest.mark.parametrize("shape", [(6,), (6, 3, 2)])
def test_masked_averages_equal_clus_and_numpy(shape):
  rng = np.random.default_rng(1)
  names = ("loss", "top_1")
  ours_cls = metrics.masked_averages(names)
  clu_cls = clu_metrics.Collection.create(**{n: clu_metrics.Average.from_output(n)
                                             for n in names})
  ours = clu = None
  values, masks = [], []
  for _ in range(3):
    out = {n: jnp.asarray(rng.normal(size=shape), jnp.float32) for n in names}
    mask = jnp.asarray(rng.uniform(size=shape) < 0.6 if len(shape) > 1
                       else rng.uniform(size=shape[:1]) < 0.6)
    a = ours_cls.single_from_model_output(**out, mask=mask)
    b = clu_cls.single_from_model_output(**out, mask=mask)
    ours = a if ours is None else ours.merge(a)
    clu = b if clu is None else clu.merge(b)
    values.append(out["loss"])
    masks.append(np.broadcast_to(np.asarray(mask).reshape(mask.shape + (1,) * (
        len(shape) - mask.ndim)), shape))
  got, want = ours.compute(), clu.compute()
  for name in names:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=name)
  v, m = np.concatenate(values), np.concatenate(masks)
  np.testing.assert_allclose(got["loss"], v[m].mean(), rtol=1e-5)


def test_a_per_batch_scalar_ignores_a_per_example_mask_as_clu_does():
  mask = jnp.array([1.0, 0.0, 1.0])
  ours = metrics.masked_averages(("loss",)).single_from_model_output(
      loss=jnp.float32(2.5), mask=mask)
  clu = clu_metrics.Collection.create(loss=clu_metrics.Average.from_output(
      "loss")).single_from_model_output(loss=jnp.float32(2.5), mask=mask)
  assert float(ours.compute()["loss"]) == float(clu.compute()["loss"]) == 2.5


def test_a_collection_is_a_jit_output_and_one_class_per_names():
  assert metrics.train_metrics(("a",)) is metrics.train_metrics(("a",))
  assert metrics.train_metrics(("a",)) is not metrics.train_metrics(("b",))
  cls = metrics.masked_averages(("loss",))
  step = jax.jit(lambda x, m: cls.single_from_model_output(loss=x, mask=m))
  out = step(jnp.arange(4.0), jnp.array([1, 1, 0, 0]))
  assert isinstance(out, cls)
  merged = out.merge(step(jnp.arange(4.0), jnp.array([0, 0, 1, 1])))
  assert float(merged.compute()["loss"]) == pytest.approx(1.5)
