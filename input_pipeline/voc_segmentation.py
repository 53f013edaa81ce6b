"""PASCAL VOC 2012 semantic segmentation as a tfds builder (tfds' `voc` has boxes only).

Manual download: put the official archive in the manual dir (by default
`<data_dir>/downloads/manual/`):

  VOCtrainval_11-May-2012.tar    (1.9 GB, host.robots.ox.ac.uk/pascal/VOC/voc2012/)

and build once:

  python -m input_pipeline.voc_segmentation --data_dir=DIR [--manual_dir=DIR]

Splits, from the archive's `VOCdevkit/VOC2012/ImageSets/Segmentation/`:
  train       train.txt (1,464 images)
  validation  val.txt   (1,449 images; DeepLab's evaluation split)
  train_aug   only when `SegmentationClassAug.zip` is in the manual dir too:
              DeepLab's "trainaug" (10,582 images): every id with a mask in
              that zip or in VOC's train list, minus VOC's val ids.

`SegmentationClassAug.zip` is the common conversion of the Semantic Boundaries
Dataset (SBD, Hariharan et al. 2011) to VOC-style masks: entries
`SegmentationClassAug/<image id>.png`, single-channel PNGs of class ids (0..20,
255 ignore). Its images are VOC 2012's `JPEGImages`, read from the VOC archive.
Where VOC has its own mask for an id, VOC's is used.

Features: `image` (the archive's JPEG bytes, unchanged), `segmentation_mask`
(uint8 [h, w, 1] class ids: 0 background, 1..20 the VOC classes, 255 the
object borders and "difficult" regions, which the evaluation ignores, read from
`SegmentationClass/<id>.png` whose palette indices are the class ids) and
`file_name` (the image id).
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import zipfile

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from xception_jax import paths

NAME = "voc_segmentation"
ARCHIVE = "VOCtrainval_11-May-2012.tar"
SBD_ARCHIVE = "SegmentationClassAug.zip"
CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor")
NUM_CLASSES = len(CLASS_NAMES)
_ROOT = "VOCdevkit/VOC2012/"


def missing_archive_message(manual_dir: str) -> str:
  return (f"PASCAL VOC 2012 segmentation needs {ARCHIVE} in the manual dir "
          f"{manual_dir} (not found there): download it from "
          "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and put it there.")


def read_mask(png_bytes: bytes, name: str) -> np.ndarray:
  """uint8 [h, w, 1] class ids of a palette (or single-channel) PNG."""
  mask = Image.open(io.BytesIO(png_bytes))
  if mask.mode not in ("P", "L"):
    raise ValueError(f"{name}: mask PNG has mode {mask.mode}; expected palette ('P') "
                     "or single-channel ('L') class ids.")
  return np.asarray(mask, np.uint8)[..., None]


class VocSegmentation(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 segmentation from the manually downloaded archive."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {ARCHIVE} (and optionally {SBD_ARCHIVE}) in the manual dir.")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None  # tfds looks for checksums beside the code; nothing is downloaded.

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="PASCAL VOC 2012 semantic segmentation (21 classes, 255 = ignore).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "segmentation_mask": tfds.features.Image(shape=(None, None, 1),
                                                     encoding_format="png"),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "segmentation_mask"),
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        metadata=tfds.core.MetadataDict(class_names=list(CLASS_NAMES)),
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager._manual_dir)  # pylint: disable=protected-access
    path = paths.join(manual_dir, ARCHIVE)
    if not paths.exists(path):
      raise FileNotFoundError(missing_archive_message(manual_dir))
    with paths.open(path, "rb") as f, tarfile.open(fileobj=f) as tar:
      ids = {split: _read_ids(tar, f"{_ROOT}ImageSets/Segmentation/{split}.txt")
             for split in ("train", "val")}
    splits = {"train": self._generate_examples(path, ids["train"], None),
              "validation": self._generate_examples(path, ids["val"], None)}
    sbd = paths.join(manual_dir, SBD_ARCHIVE)
    if paths.exists(sbd):
      with paths.open(sbd, "rb") as f, zipfile.ZipFile(f) as z:
        sbd_ids = {os.path.splitext(os.path.basename(n))[0] for n in z.namelist()
                   if n.endswith(".png")}
      aug = sorted((sbd_ids | set(ids["train"])) - set(ids["val"]))
      splits["train_aug"] = self._generate_examples(path, aug, sbd)
    return splits

  def _generate_examples(self, path, image_ids, sbd_path):
    with paths.open(path, "rb") as f, tarfile.open(fileobj=f) as tar, (
        paths.open(sbd_path, "rb") if sbd_path else _nothing()) as g, (
        zipfile.ZipFile(g) if sbd_path else _nothing()) as sbd:
      names = set(tar.getnames())
      for image_id in image_ids:
        jpeg_name = f"{_ROOT}JPEGImages/{image_id}.jpg"
        mask_name = f"{_ROOT}SegmentationClass/{image_id}.png"
        if jpeg_name not in names:
          logging.warning("%s: no %s in %s; skipped.", NAME, jpeg_name, ARCHIVE)
          continue
        if mask_name in names:
          mask = read_mask(tar.extractfile(mask_name).read(), mask_name)
        elif sbd is not None:
          sbd_name = f"SegmentationClassAug/{image_id}.png"
          mask = read_mask(sbd.read(sbd_name), sbd_name)
        else:
          raise FileNotFoundError(f"{ARCHIVE} has no {mask_name}.")
        yield image_id, {"image": tar.extractfile(jpeg_name).read(),
                         "segmentation_mask": mask, "file_name": image_id}


class _nothing:  # pylint: disable=invalid-name
  def __enter__(self):
    return None

  def __exit__(self, *args):
    return False


def _read_ids(tar: tarfile.TarFile, name: str) -> list[str]:
  try:
    member = tar.extractfile(name)
  except KeyError as e:
    raise FileNotFoundError(f"{ARCHIVE} has no {name}: not the VOC 2012 trainval "
                            "archive?") from e
  return [line.strip() for line in member.read().decode().splitlines() if line.strip()]


def default_manual_dir(data_dir: str | None) -> str:
  return paths.join(data_dir or tfds.core.constants.DATA_DIR, "downloads", "manual")


def builder(data_dir: str | None = None) -> VocSegmentation:
  return VocSegmentation(data_dir=data_dir)


def prepare(data_dir: str | None = None, manual_dir: str | None = None) -> VocSegmentation:
  """Builds the dataset once from the archive(s) in manual_dir; returns the builder."""
  b = builder(data_dir)
  if b.is_prepared():
    return b
  manual_dir = manual_dir or default_manual_dir(data_dir)
  if not paths.exists(paths.join(manual_dir, ARCHIVE)):
    raise FileNotFoundError(missing_archive_message(manual_dir))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, compute_stats=tfds.download.ComputeStatsMode.SKIP,
      try_download_gcs=False))
  return b


def not_prepared_message(data_dir: str | None) -> str:
  manual_dir = default_manual_dir(data_dir)
  return (f"Dataset {NAME} is not prepared in {data_dir or tfds.core.constants.DATA_DIR}. "
          f"Put {ARCHIVE} in {manual_dir} and build it once with: python -m "
          f"input_pipeline.voc_segmentation --data_dir={data_dir or '~/tensorflow_datasets'}")


def main(argv=None):
  parser = argparse.ArgumentParser(description="Builds voc_segmentation once.")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--manual_dir", default=None)
  args = parser.parse_args(argv)
  b = prepare(args.data_dir, args.manual_dir)
  print(f"{NAME}: {b.data_path}: " + ", ".join(
      f"{k} {v.num_examples}" for k, v in b.info.splits.items()))


if __name__ == "__main__":
  main()
