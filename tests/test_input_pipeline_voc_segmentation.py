"""The VOC 2012 segmentation builder on a tiny fake archive in VOC's own layout."""

import io
import tarfile
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import input_pipeline
from input_pipeline import voc_segmentation

ROOT = "VOCdevkit/VOC2012/"
TRAIN, VAL, EXTRA = ["2007_000032", "2007_000039", "2008_000123"], ["2007_000033",
                                                                       "2009_000001"], ["2010_004000"]


def _palette_png(mask):
  image = Image.fromarray(mask, mode="P")
  palette = np.zeros((256, 3), np.uint8)
  palette[:21] = np.random.default_rng(0).integers(0, 256, (21, 3))
  palette[255] = (224, 224, 192)  # VOC's border colour.
  image.putpalette(palette.ravel().tolist())
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def _example(rng):
  h, w = (int(v) for v in rng.integers(20, 40, size=2))
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG")
  mask = np.zeros((h, w), np.uint8)
  y, x = rng.integers(2, h // 2), rng.integers(2, w // 2)
  mask[y:y + h // 3, x:x + w // 3] = rng.integers(1, 21)
  # The 255 border around the object, as VOC draws it.
  border = np.zeros_like(mask, bool)
  border[y - 1:y + h // 3 + 1, x - 1:x + w // 3 + 1] = True
  mask[border & (mask == 0)] = 255
  return buffer.getvalue(), mask


def _add(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def fake_voc(tmp_path_factory):
  root = tmp_path_factory.mktemp("voc")
  manual = root / "manual"
  manual.mkdir()
  rng = np.random.default_rng(0)
  examples = {i: _example(rng) for i in TRAIN + VAL + EXTRA}
  with tarfile.open(manual / voc_segmentation.ARCHIVE, "w") as tar:
    for split, ids in (("train", TRAIN), ("val", VAL), ("trainval", TRAIN + VAL)):
      _add(tar, f"{ROOT}ImageSets/Segmentation/{split}.txt", ("\n".join(ids) + "\n").encode())
    for i, (jpeg, mask) in examples.items():
      _add(tar, f"{ROOT}JPEGImages/{i}.jpg", jpeg)
      if i not in EXTRA:  # Extra ids have SBD masks only.
        _add(tar, f"{ROOT}SegmentationClass/{i}.png", _palette_png(mask))
  with zipfile.ZipFile(manual / voc_segmentation.SBD_ARCHIVE, "w") as z:
    for i in EXTRA + VAL[:1] + TRAIN[:1]:  # SBD also covers some VOC val/train ids.
      mask = examples[i][1]
      if i not in EXTRA:  # Another mask than VOC's: VOC's must win (train_aug keeps it).
        mask = np.where(mask == 255, 0, mask % 20 + 1).astype(np.uint8)
        assert not np.array_equal(mask, examples[i][1])
      buffer = io.BytesIO()
      Image.fromarray(mask, mode="L").save(buffer, format="PNG")
      z.writestr(f"SegmentationClassAug/{i}.png", buffer.getvalue())
  data_dir = str(root / "tfds")
  voc_segmentation.prepare(data_dir, str(manual))
  return data_dir, examples


def test_builder_reads_back_exactly(fake_voc):
  data_dir, examples = fake_voc
  b = voc_segmentation.builder(data_dir)
  assert b.info.splits["train"].num_examples == 3
  assert b.info.splits["validation"].num_examples == 2
  assert b.info.metadata["class_names"][0] == "background"
  for split, ids in (("train", TRAIN), ("validation", VAL),
                     ("train_aug", sorted(set(TRAIN + EXTRA))), ):
    raw = b.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    got = {ex["file_name"].decode(): ex for ex in tfds.as_numpy(raw)}
    assert sorted(got) == sorted(ids), split
    for i, ex in got.items():
      jpeg, mask = examples[i]
      assert ex["image"] == jpeg  # The archive's JPEG bytes, unchanged.
      np.testing.assert_array_equal(ex["segmentation_mask"][..., 0], mask)
      assert 255 in mask and mask.max() == 255


def test_pipeline_reads_voc(fake_voc):
  data_dir, examples = fake_voc
  config = input_pipeline.segmentation_data_config()
  config.update(dict(dataset="voc_segmentation", data_dir=data_dir, image_size=24,
                     eval_image_size=40, batch_size=2, eval_batch_size=2,
                     input_threads=2, input_autotune=False))
  bundle = input_pipeline.create_segmentation_datasets(config, 0, 1)
  assert bundle.num_classes == 21 and bundle.num_eval_examples == 2
  batch = next(bundle.eval_batches())
  for row, image_id in enumerate(VAL):
    h, w = batch["size"][row]
    np.testing.assert_array_equal(batch["label"][row, :h, :w], examples[image_id][1])
  assert next(bundle.train)["label"].shape == (2, 24, 24)


def test_missing_archive_is_a_one_line_error(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  with pytest.raises(FileNotFoundError) as e:
    voc_segmentation.prepare(str(tmp_path / "tfds"), str(manual))
  message = str(e.value)
  assert "\n" not in message
  assert voc_segmentation.ARCHIVE in message and str(manual) in message
  # Inside the builder too (e.g. `tfds build` with an empty manual dir).
  (manual / "README").write_text("not the archive")
  b = voc_segmentation.builder(str(tmp_path / "tfds2"))
  with pytest.raises(FileNotFoundError, match=f"needs {voc_segmentation.ARCHIVE} in the "
                     f"manual dir {manual}"):
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  # The pipeline names the file, the directory and the build command.
  config = input_pipeline.segmentation_data_config()
  config.update(dict(dataset="voc_segmentation", data_dir=str(tmp_path / "tfds3")))
  with pytest.raises(input_pipeline.DatasetNotPreparedError,
                     match="Put VOCtrainval_11-May-2012.tar in .*downloads/manual and build"):
    input_pipeline.create_segmentation_datasets(config, 0, 1)
