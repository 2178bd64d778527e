import numpy as np
import pytest

from mpscl.data import DataError, map_labels, parse_class_map


def test_presets_and_explicit_maps():
    m = parse_class_map("mmwhs")
    assert m.classes == ("background", "MYO", "LAC", "LVC", "AA")
    assert m.label_values == (0, 205, 420, 500, 820)
    m = parse_class_map("MSCMRSEG")
    assert m.classes == ("background", "MYO", "LV", "RV") and m.label_values == (0, 200, 500, 600)
    m = parse_class_map(" 600=RV, 200=MYO ")  # ids follow the given order
    assert m.classes == ("background", "RV", "MYO") and m.label_values == (0, 600, 200)


@pytest.mark.parametrize("spec,msg", [
    ("200=MYO,200=LV", "value 200 is given twice"),
    ("200=MYO,500=myo", "'myo' is given twice"),
    ("0=MYO", "value 0 is background"),
    ("2.5=MYO", "'2.5' of 'MYO' is not an integer"),
    ("abc=MYO", "not an integer"),
    ("200=background", "reserved"),
    ("200", "unknown preset"),
    ("200=MYO,LV", "'LV' is not VALUE=NAME"),
    ("", "empty"),
    ("200=1abc", "must start with a letter"),
    ("-5=X", "negative"),
])
def test_bad_class_maps_are_refused(spec, msg):
    with pytest.raises(DataError, match=msg):
        parse_class_map(spec)


def test_map_labels_counts_unmapped_values():
    m = parse_class_map("200=MYO,500=LV")
    raw = np.array([[0, 200, 500], [600, 600, 7]], dtype=np.int16)
    ids, unmapped = map_labels(raw, m)
    assert ids.dtype == np.uint8
    assert ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert unmapped == {600: 2, 7: 1}
    ids, unmapped = map_labels(raw.astype(np.float64), m)  # float storage of integer labels
    assert ids.tolist() == [[0, 1, 2], [0, 0, 0]] and unmapped == {600: 2, 7: 1}
    assert m.to_values(ids).tolist() == [[0, 200, 500], [0, 0, 0]]


def test_non_integer_labels_name_the_source():
    m = parse_class_map("mscmrseg")
    with pytest.raises(DataError, match=r"lab\.nii: label values must be integers, found \[0\.5\]"):
        map_labels(np.array([0.0, 0.5, 200.0]), m, "lab.nii")


def test_map_labels_negative_and_huge_values_take_the_general_path():
    m = parse_class_map("200=MYO")
    ids, unmapped = map_labels(np.array([-1, 200, 5_000_000, 200], dtype=np.int64), m)
    assert ids.tolist() == [0, 1, 0, 1] and unmapped == {-1: 1, 5_000_000: 1}
