"""Independent NumPy references shared by the tests (plain loops over definitions)."""
import numpy as np


def grouped_conv_same(x: np.ndarray, kernel: np.ndarray, groups: int) -> np.ndarray:
  """Stride-1 'SAME' grouped convolution (cross-correlation), brute force in float64.

  x: [N, H, W, C]; kernel: [kh, kw, C // groups, O] (Flax HWIO grouped layout): output
  channel o sees input channels of its group g = o // (O // groups).
  """
  x = np.asarray(x, np.float64)
  kernel = np.asarray(kernel, np.float64)
  kh, kw, cin_group, cout = kernel.shape
  n, h, w, c = x.shape
  assert c == cin_group * groups and cout % groups == 0
  cout_group = cout // groups
  xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = np.zeros((n, h, w, cout))
  for o in range(cout):
    g = o // cout_group
    for i in range(kh):
      for j in range(kw):
        for ci in range(cin_group):
          out[..., o] += xp[:, i:i + h, j:j + w, g * cin_group + ci] * kernel[i, j, ci, o]
  return out
