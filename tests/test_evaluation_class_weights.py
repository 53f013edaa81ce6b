"""Class-weight files (plain text, JSON, CSV), the frequency rule, and their errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from xception_jax.evaluation import (class_weights_from_frequency, load_class_weights, map_at_k,
                                     save_class_weights)


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return path


def test_plain_text_with_comments_and_blank_lines(tmp_path):
  path = _write(tmp_path, "w.txt", "# weights\n0.5\n\n2\n  1e-3 \n0\n")
  np.testing.assert_array_equal(load_class_weights(path, 4), [0.5, 2.0, 0.001, 0.0])


def test_json_list_and_mapping(tmp_path):
  np.testing.assert_array_equal(
      load_class_weights(_write(tmp_path, "a.json", "[1, 2.5, 0]"), 3), [1.0, 2.5, 0.0])
  # Classes absent from a mapping get weight 0 (left out of the evaluation).
  np.testing.assert_array_equal(
      load_class_weights(_write(tmp_path, "b.json", '{"2": 4, "0": 0.25}'), 4),
      [0.25, 0.0, 4.0, 0.0])
  # Detected by content too, whatever the extension.
  np.testing.assert_array_equal(
      load_class_weights(_write(tmp_path, "c.txt", ' {"1": 3}'), 2), [0.0, 3.0])


def test_csv_with_and_without_header(tmp_path):
  expected = [0.0, 1.5, 0.0, 7.0]
  for name, text in [("h.csv", "class_id,weight\n3,7\n1, 1.5\n"), ("n.csv", "3,7\n1,1.5\n"),
                     ("sniffed.txt", "# comment\n3,7\n\n1,1.5\n")]:
    np.testing.assert_array_equal(load_class_weights(_write(tmp_path, name, text), 4), expected)


@settings(max_examples=25, deadline=None)
@given(weights=st.lists(st.floats(0, 1e30, allow_nan=False, allow_subnormal=True), min_size=1,
                        max_size=30))
def test_save_load_round_trip_is_exact(tmp_path_factory, weights):
  path = tmp_path_factory.mktemp("w") / "weights.txt"
  save_class_weights(path, weights)
  np.testing.assert_array_equal(load_class_weights(path, len(weights)), weights)


def test_loaded_weights_drive_map_at_k(tmp_path):
  scores = np.array([[3, 1], [2, 2], [1, 3]], np.float32)
  labels = np.array([[0, 1], [1, 0], [1, 0]])
  # Class 0: AP 7/12 (hits at ranks 2, 3); class 1: AP 1/3 (hit at rank 3).
  path = _write(tmp_path, "w.csv", "class_id,weight\n0,3\n1,1\n")
  assert map_at_k(scores, labels, class_weights=load_class_weights(path, 2)) == pytest.approx(
      (3 * 7 / 12 + 1 / 3) / 4, rel=1e-6)


def test_class_weights_from_frequency():
  labels = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 1]])
  np.testing.assert_allclose(class_weights_from_frequency(labels), [3 / 5, 0, 2 / 5])
  np.testing.assert_allclose(class_weights_from_frequency(labels.astype(bool)), [3 / 5, 0, 2 / 5])
  np.testing.assert_allclose(class_weights_from_frequency([10, 30, 0, 60]), [0.1, 0.3, 0, 0.6])


@pytest.mark.parametrize("name, text, num_classes, message", [
    ("w.txt", "1\n2\n", 3, "w.txt: expected 3 weights .* found 2"),
    ("w.txt", "1\nabc\n2\n", 3, "w.txt, line 2: cannot parse weight 'abc'"),
    ("w.txt", "1\n-2\n", 2, "w.txt, line 2: weight -2.0 is negative"),
    ("w.txt", "nan\n1\n", 2, "w.txt, line 1: weight is NaN"),
    ("w.txt", "1\ninf\n", 2, "w.txt, line 2: weight is infinite"),
    ("w.json", "[1, 2]", 3, "w.json: expected a list of 3 weights"),
    ("w.json", "[1, true]", 2, "w.json, class 1: weight must be a number"),
    ("w.json", '[1, "2"]', 2, "w.json, class 1: weight must be a number"),
    ("w.json", "[1, -1]", 2, "w.json, class 1: weight -1.0 is negative"),
    ("w.json", "[1, NaN]", 2, "w.json, class 1: weight is NaN"),
    ("w.json", '{"5": 1}', 3, "w.json, key '5': class id 5 is out of range \\[0, 3\\)"),
    ("w.json", '{"x": 1}', 3, "w.json, key 'x': cannot parse class id 'x'"),
    ("w.json", '{"1": 1, "1": 2}', 3, "w.json: class id '1' is listed more than once"),
    ("w.json", '{"1": 1, "01": 2}', 3, "class id 1 is listed more than once"),
    ("w.json", '"weights"', 3, "w.json: JSON must be a list"),
    ("w.json", "[1, 2", 2, "w.json: invalid JSON at line 1"),
    ("w.csv", "0,1\n7,2\n", 3, "w.csv, line 2: class id 7 is out of range"),
    ("w.csv", "0,1\n-1,2\n", 3, "w.csv, line 2: class id -1 is out of range"),
    ("w.csv", "class,weight\n0,1\nx,2\n", 3, "w.csv, line 3: cannot parse class id 'x'"),
    ("w.csv", "0,1\n1,oops\n", 3, "w.csv, line 2: cannot parse weight 'oops'"),
    ("w.csv", "0,1\n1,2,3\n", 3, "w.csv, line 2: expected 2 comma-separated fields"),
    ("w.csv", "0,1\n0,2\n", 3, "w.csv, line 2: class id 0 is listed again \\(first on line 1\\)"),
    ("w.csv", "0,1\n1,-3\n", 3, "w.csv, line 2: weight -3.0 is negative"),
])
def test_bad_files_raise(tmp_path, name, text, num_classes, message):
  path = _write(tmp_path, name, text)
  with pytest.raises(ValueError, match=message):
    load_class_weights(path, num_classes)


def test_bad_arguments_raise(tmp_path):
  with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
    load_class_weights(_write(tmp_path, "w.txt", "1\n"), 0)
  with pytest.raises(FileNotFoundError):
    load_class_weights(tmp_path / "missing.txt", 1)
  with pytest.raises(ValueError, match=r"weights\[1\]: weight -1.0 is negative"):
    save_class_weights(tmp_path / "o.txt", [1.0, -1.0])
  with pytest.raises(ValueError, match=r"weights\[0\]: weight is NaN"):
    save_class_weights(tmp_path / "o.txt", [np.nan])
  with pytest.raises(ValueError, match="non-empty 1-D"):
    save_class_weights(tmp_path / "o.txt", [[1.0]])
  assert not (tmp_path / "o.txt").exists()  # Nothing written on error.
  with pytest.raises(ValueError, match="must be 0 or 1"):
    class_weights_from_frequency(np.array([[1, 2]]))
  with pytest.raises(ValueError, match="finite and >= 0"):
    class_weights_from_frequency([1, -1])
  with pytest.raises(ValueError, match="every class has count 0"):
    class_weights_from_frequency([0, 0])
  with pytest.raises(ValueError, match="got shape"):
    class_weights_from_frequency(np.ones((1, 1, 1)))
