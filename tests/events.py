"""Scalars read back from the TensorBoard event files a run wrote in its workdir."""
import glob
import os

import tensorflow as tf


def event_files(workdir):
  return set(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))


def logged(paths, tag="train_loss"):
  """{step: value} of one scalar, read back from TensorBoard event files."""
  values = {}
  for path in paths:
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def losses(workdir, tag="train_loss"):
  """{step: value} of one scalar from every event file of a workdir."""
  return logged(event_files(workdir), tag)


def loss_curve(workdir, tag="train_loss"):
  """The scalar's values in step order."""
  values = losses(workdir, tag)
  return [values[s] for s in sorted(values)]
