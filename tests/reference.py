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


def conv_torch_style(x, kernel, groups, stride, dilation):
  """Brute-force grouped cross-correlation with PyTorch's symmetric padding, float64."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  kh, kw, cin_group, cout = kernel.shape
  n, h, w, c = x.shape
  pad = dilation * (kh // 2)
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
  ow = (w + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
  out = np.zeros((n, oh, ow, cout))
  cout_group = cout // groups
  for o in range(cout):
    g = o // cout_group
    for i in range(oh):
      for j in range(ow):
        patch = xp[:, stride * i:stride * i + dilation * (kh - 1) + 1:dilation,
                   stride * j:stride * j + dilation * (kw - 1) + 1:dilation,
                   g * cin_group:(g + 1) * cin_group]
        out[:, i, j, o] = np.einsum("nabc,abc->n", patch, kernel[..., o])
  return out
