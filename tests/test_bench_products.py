"""benchmarks/bench_products_vs_torch.py's list of the eval forward's matrix products,
against a hand count of Xception's 1x1 products from the paper's figure 5."""
import collections
import importlib.util
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "benchmarks", "bench_products_vs_torch.py")


@pytest.fixture(scope="module")
def bench():
  spec = importlib.util.spec_from_file_location("bench_products_vs_torch", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _hand_count(size: int, batch: int) -> collections.Counter:
  """Figure 5 at `size`: conv1 3x3/2 and conv2 3x3 'valid', then modules whose two
  separable convolutions run at the module's input size before a 3x3/2 max-pool
  ('same'), a strided 1x1 shortcut at the pooled size; 8 middle modules of three
  728-wide separable convolutions; the exit's 1536 and 2048 separable convolutions;
  the 1000-way classifier on the pooled 2048 features."""
  count = collections.Counter()
  side = ((size - 3) // 2 + 1) - 2                 # conv1 (stride 2), conv2: 147 at 299
  channels = 64
  for first, second in ((128, 128), (256, 256), (728, 728)):
    rows = batch * side * side
    count[(rows, channels, first)] += 1
    count[(rows, first, second)] += 1
    pooled = -(-side // 2)
    count[(batch * pooled * pooled, channels, second)] += 1   # shortcut
    side, channels = pooled, second
  count[(batch * side * side, 728, 728)] += 24       # middle flow
  count[(batch * side * side, 728, 728)] += 1        # exit module, first separable conv
  count[(batch * side * side, 728, 1024)] += 1
  pooled = -(-side // 2)
  count[(batch * pooled * pooled, 728, 1024)] += 1   # exit shortcut
  count[(batch * pooled * pooled, 1024, 1536)] += 1
  count[(batch * pooled * pooled, 1536, 2048)] += 1
  count[(batch, 2048, 1000)] += 1
  return count


@pytest.mark.parametrize("size,batch", [(299, 8), (150, 2)])
def test_product_shapes_are_the_papers_one_by_one_convolutions(bench, size, batch):
  shapes = bench.product_shapes(size, batch)
  assert shapes == _hand_count(size, batch)
  assert sum(shapes.values()) == 34 + 4 + 1     # separable, shortcuts, classifier
