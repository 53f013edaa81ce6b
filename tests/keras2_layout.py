"""Writing Keras 2's save_weights HDF5 layout (the published ..._tf_kernels.h5 files),
shared by the Xception and Inception V3 converter tests."""
import h5py
import numpy as np


def write_keras2_weights(path, named_layers, **attrs):
  """named_layers: (Keras 2 name, Keras layer) in model order; every layer is listed in
  `layer_names`, its arrays stored at <name>/<name>/<weight>:0 and listed in its group's
  `weight_names`. attrs: root attributes (e.g. keras_version=b"2.0.8")."""
  with h5py.File(path, "w") as f:
    f.attrs["layer_names"] = np.array([name.encode() for name, _ in named_layers])
    for key, value in attrs.items():
      f.attrs[key] = value
    for name, layer in named_layers:
      group = f.create_group(name)
      weight_names = [f"{name}/{w.name}:0" for w in layer.weights]
      group.attrs["weight_names"] = np.array([w.encode() for w in weight_names], dtype="S")
      for weight_name, value in zip(weight_names, layer.get_weights()):
        group.create_dataset(weight_name, data=value)
