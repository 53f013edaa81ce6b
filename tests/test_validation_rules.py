"""validation.RULES, row by row: every field names a real config field, and a bad value
for it is refused in one line naming the field.

The rows are read from `validation.RULES` itself, so a new row is tested without being
listed here, and a misspelt field (which `validate` would skip silently: a row whose
field the config lacks is skipped) fails `test_every_rule_names_a_field_of_a_shipped_config`.
Cheap: nothing is compiled (a bad row value is refused before the model is traced).
"""
import pytest

from configs import base, deeplab_demo, deeplab_voc
from xception_jax import validation
from xception_jax.validation import ConfigError

CONFIGS = {"configs/base.py": base.get_config, "configs/deeplab_demo.py":
           deeplab_demo.get_config, "configs/deeplab_voc.py": deeplab_voc.get_config}
# Tried in order, those of the shipped value's type first; a rule's bad value is the first
# one its own test rejects (a rule that rejects none of them cannot refuse anything and
# fails below).
CANDIDATES = (-1, 0, 0.5, 1.5, 30, float("nan"), (), (0.5, 0.2), None, "bad")
FIELDS = [rule[0] for rule in validation.RULES]


_get = validation._get  # pylint: disable=protected-access


def _configs_with(field):
  configs = {name: make() for name, make in CONFIGS.items()}
  return {name: c for name, c in configs.items() if _get(c, field) is not KeyError}


def _set(config, field, value):
  node = config
  *parents, leaf = field.split(".")
  for part in parents:
    node = node[part]
  with config.ignore_type():  # a bool field given -1, as a hand-edited config could
    node[leaf] = value


@pytest.mark.parametrize("field", FIELDS)
def test_every_rule_names_a_field_of_a_shipped_config(field):
  assert _configs_with(field), (
      f"validation.RULES row {field!r} names no field of {sorted(CONFIGS)}: misspelt or "
      "removed, so validate() skips it silently.")


@pytest.mark.parametrize("field, test, allowed", validation.RULES, ids=FIELDS)
def test_a_bad_value_for_every_rule_is_refused_naming_the_field(field, test, allowed):
  name, config = next(iter(_configs_with(field).items()))
  shipped = _get(config, field)
  assert test(shipped), f"{name} ships config.{field} = {shipped!r}, which its rule refuses"
  candidates = sorted(CANDIDATES, key=lambda v: not isinstance(v, type(shipped)))
  bad = next((v for v in candidates if not test(v)), KeyError)
  assert bad is not KeyError, f"the rule for {field!r} accepts every candidate value"
  _set(config, field, bad)
  bad = _get(config, field)  # as stored (an int set on a float field: float)
  with pytest.raises(ConfigError) as info:
    validation.validate(config)
  message = str(info.value)
  allowed = allowed() if callable(allowed) else allowed  # a list known at run time
  assert message == f"config.{field} = {bad!r}: must be {allowed}.", message


def test_max_scale_factor_below_min_scale_factor_is_refused():
  config = deeplab_demo.get_config()
  config.data_dir = "/nonexistent/tfds"  # never opened by validation
  config.min_scale_factor, config.max_scale_factor = 1.5, 1.5
  validation.validate(config)  # one scale: accepted
  config.max_scale_factor = 1.25
  with pytest.raises(ConfigError) as info:
    validation.validate(config)
  assert str(info.value) == (
      "config.max_scale_factor = 1.25: must be >= config.min_scale_factor = 1.5 (the "
      "training scale range); raise it or lower min_scale_factor.")
