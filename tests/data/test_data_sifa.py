import struct

import numpy as np
import pytest

from mpscl.data import (DataError, PreparedDataset, prepare_sifa, read_sifa_npz,
                        read_tfrecord_slices, sifa_intensity)
from mpscl.data.context import case_slice_spacing, case_stacks, coarser_spacing
from mpscl.data.tfrecord import crc32c, masked_crc32c, parse_example, read_examples


# ----------------------------------------------------------------------------- helpers
def bitwise_crc32c(data: bytes) -> int:  # the textbook definition, independent of the module
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def ld(num: int, payload: bytes) -> bytes:  # a length-delimited field
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def example(features: dict, packed_ints: bool = True) -> bytes:
    entries = b""
    for key, value in features.items():
        if isinstance(value, bytes):
            feat = ld(1, ld(1, value))
        elif isinstance(value, float) or (isinstance(value, list) and isinstance(value[0], float)):
            vals = value if isinstance(value, list) else [value]
            feat = ld(2, ld(1, struct.pack(f"<{len(vals)}f", *vals)))
        else:
            vals = value if isinstance(value, list) else [value]
            body = (ld(1, b"".join(varint(v) for v in vals)) if packed_ints
                    else b"".join(varint(1 << 3) + varint(v) for v in vals))
            feat = ld(3, body)
        entries += ld(1, ld(1, key.encode()) + ld(2, feat))
    return ld(1, entries)


def record(payload: bytes) -> bytes:
    n = struct.pack("<Q", len(payload))
    return n + struct.pack("<I", masked_crc32c(n)) + payload + struct.pack("<I", masked_crc32c(payload))


def sifa_example(data: np.ndarray, label: np.ndarray, dshape=None) -> bytes:
    dshape = dshape or data.shape
    f = {"data_vol": data.astype("<f4").tobytes(), "label_vol": label.astype("<f4").tobytes()}
    for i in range(3):
        f[f"dsize_dim{i}"] = dshape[i]
        f[f"lsize_dim{i}"] = label.shape[i]
    return example(f)


# ----------------------------------------------------------------------------- crc and protobuf
def test_crc32c_matches_the_standard_and_a_bitwise_reference():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    data = np.random.default_rng(0).integers(0, 256, 20011, dtype=np.uint8).tobytes()
    assert crc32c(data) == bitwise_crc32c(data)  # long input: the vectorised path
    assert crc32c(data[:300]) == bitwise_crc32c(data[:300])


def test_parse_example_wire_formats():
    buf = example({"b": b"xyz", "f": [1.5, -2.0], "i": [3, -1, 300]})
    ex = parse_example(buf)
    assert ex["b"] == [b"xyz"]
    assert ex["f"].dtype == np.float32 and ex["f"].tolist() == [1.5, -2.0]
    assert ex["i"].tolist() == [3, -1, 300]
    assert parse_example(example({"i": [7, 8]}, packed_ints=False))["i"].tolist() == [7, 8]


# ----------------------------------------------------------------------------- real release files
def test_real_tfrecords(sifa_dir):
    s = read_tfrecord_slices(sifa_dir / "training_ct" / "image_01.tfrecords")
    assert len(s) == 1
    s = s[0]
    assert s.data_vol.shape == (256, 256, 3) and s.data_vol.dtype == np.float32
    assert s.label_vol.shape == (256, 256, 3) and s.label.dtype == np.uint8
    assert s.data_vol.min() == pytest.approx(-1.1290416) and s.data_vol.max() == pytest.approx(2.4345453)
    assert int((s.label_vol[:, :, 1] == 5).sum()) == 2484  # value 5 is in the release...
    counts = np.bincount(s.label.ravel(), minlength=6).tolist()
    assert counts == [47269 + 2484, 4038, 0, 4112, 7633, 0]  # ...and becomes background
    v = read_tfrecord_slices(sifa_dir / "validation_ct" / "image_01.tfrecords")[0]
    assert np.bincount(v.label.ravel(), minlength=5).tolist() == [57138 + 2881, 0, 5517, 0, 0]
    mr0 = read_tfrecord_slices(sifa_dir / "training_mr" / "mr_train_slice0.tfrecords")[0]
    assert mr0.label.max() == 0  # the ADR MR slice is all background


def test_npz_reader_and_intensity_mapping(sifa_dir):
    assert sifa_intensity(np.array([-2.8, 0.2, 3.2]), "ct").tolist() == pytest.approx([-1, 0, 1])
    assert sifa_intensity(np.array([-1.8, 1.3, 4.4]), "MR").tolist() == pytest.approx([-1, 0, 1])
    assert sifa_intensity(np.array([4.4 + 6.2]), "mr")[0] == pytest.approx(3.0)  # not clipped
    # example_slice.npz is the training_mr/image_01 slice saved as npz
    rec = read_tfrecord_slices(sifa_dir / "training_mr" / "image_01.tfrecords")[0]
    raw = np.load(sifa_dir / "example_slice.npz")
    image, label = read_sifa_npz(sifa_dir / "example_slice.npz", "mr", flip=False)
    assert np.allclose(image, 2 * (raw["arr_0"] + 1.8) / 6.2 - 1, atol=1e-6)
    assert np.array_equal(label, np.where(raw["arr_1"] == 5, 0, raw["arr_1"]).astype(np.uint8))
    assert np.array_equal(label[:, :, 1], rec.label)
    flipped, flabel = read_sifa_npz(sifa_dir / "example_slice.npz", "mr")
    assert np.array_equal(flipped, image[::-1, ::-1]) and np.array_equal(flabel, label[::-1, ::-1])
    assert np.bincount(label.ravel(), minlength=6).tolist()[5] == 0


def test_prepare_sifa_tfrecords_and_npz(tmp_path, sifa_dir):
    man = prepare_sifa(str(sifa_dir / "training_ct" / "*.tfrecords"), "ct", tmp_path / "ct",
                       log=lambda m: None)
    assert [c["case"] for c in man["cases"]] == ["ct_train_slice0", "image_01"]
    assert man["classes"] == ["background", "MYO", "LAC", "LVC", "AA"]
    assert man["label_values"] == [0, 1, 2, 3, 4] and man["totals"]["slices"] == 2
    ds = PreparedDataset(tmp_path / "ct")
    c = ds.case("image_01")
    rec = read_tfrecord_slices(sifa_dir / "training_ct" / "image_01.tfrecords")[0]
    assert np.allclose(c["image"][0], 2 * (rec.data_vol[:, :, 1] + 2.8) / 6.0 - 1, atol=1e-6)
    assert np.array_equal(c["label"][0], rec.label) and c["meta"]["class_voxels"]["AA"] == 7633
    # the record's two other slices are the slice's neighbours (data.context 1): the case has
    # one slice, so without them its stack would repeat the slice itself
    assert c["neighbours"].shape == (1, 2, 256, 256)
    for k, j in ((0, 0), (1, 2)):
        assert np.allclose(c["neighbours"][0, k], 2 * (rec.data_vol[:, :, j] + 2.8) / 6.0 - 1, atol=1e-6)
    stacks = case_stacks(c, 1)
    assert stacks.shape == (1, 3, 256, 256) and np.array_equal(stacks[0, 1], c["image"][0])
    assert np.array_equal(stacks[:, [0, 2]], c["neighbours"]) and not np.array_equal(stacks[0, 0], stacks[0, 1])
    assert np.array_equal(case_stacks(c, 0), c["image"][:, None])
    # the release records no voxel size: no slice spacing for data.context_spacing to take
    assert case_slice_spacing(c["meta"]) is None and coarser_spacing([ds]) is None
    man = prepare_sifa(str(sifa_dir / "example_slice.npz"), "mr", tmp_path / "npz", size=128,
                       log=lambda m: None)
    c = PreparedDataset(tmp_path / "npz").case("example_slice")
    assert c["image"].shape == (3, 128, 128) and c["label_orig"].shape == (256, 256, 3)
    assert "neighbours" not in c  # a volume: its neighbours are its own slices
    assert np.array_equal(case_stacks(c, 1)[1], c["image"])
    assert "flipped" in man["normalisation"] and man["modality"] == "mr"
    with pytest.raises(DataError, match="modality must be 'ct' or 'mr'"):
        prepare_sifa(str(sifa_dir / "example_slice.npz"), "pet", tmp_path / "x")


def test_prepare_sifa_takes_the_release_folder(tmp_path, sifa_dir):
    # `mpscl prepare-sifa FOLDER`, as users type it: the folder's TFRecord files
    man = prepare_sifa(str(sifa_dir / "training_ct"), "ct", tmp_path / "ct", log=lambda m: None)
    assert [c["case"] for c in man["cases"]] == ["ct_train_slice0", "image_01"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .tfrecords or .npz file"):
        prepare_sifa(str(tmp_path / "empty"), "ct", tmp_path / "x", log=lambda m: None)


# ----------------------------------------------------------------------------- damaged files
def test_corrupt_and_truncated_records_name_file_and_record(tmp_path, sifa_dir):
    good = (sifa_dir / "training_ct" / "image_01.tfrecords").read_bytes()
    cases = {
        "flip.tfrecords": (good + good[:100] + b"\x00" + good[101:], r"record 1 .*corrupt record data"),
        "cut.tfrecords": (good + good[:-10], r"record 1 .*truncated record"),
        "head.tfrecords": (good[:20], r"record 0 .*truncated record"),
        "stub.tfrecords": (good + good[:5], r"record 1 .*truncated record header"),
        "len.tfrecords": (b"\x01" + good[1:], r"record 0 .*corrupt record header"),
        "empty.tfrecords": (b"", r"empty file"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: .*{msg}"):
            read_tfrecord_slices(tmp_path / name)
    (tmp_path / "two.tfrecords").write_bytes(good + good)
    assert len(read_tfrecord_slices(tmp_path / "two.tfrecords")) == 2


def test_record_shape_checks(tmp_path):
    data = np.zeros((4, 4, 3), np.float32)
    lab = np.zeros((4, 4, 3), np.float32)
    lab[:, :, 1] = 5
    lab[0, 0, 1] = 2
    (tmp_path / "ok.tfrecords").write_bytes(record(sifa_example(data, lab)))
    s = read_tfrecord_slices(tmp_path / "ok.tfrecords")[0]
    assert s.label.tolist()[0][:2] == [2, 0] and int(s.label.sum()) == 2
    (tmp_path / "bad.tfrecords").write_bytes(record(sifa_example(data, lab))
                                             + record(sifa_example(data, lab, (4, 4, 2))))
    with pytest.raises(DataError, match=r"bad[.]tfrecords: record 1: data shape \(4, 4, 2\) differs"):
        read_tfrecord_slices(tmp_path / "bad.tfrecords")
    (tmp_path / "nolab.tfrecords").write_bytes(record(example({"data_vol": b"1234"})))
    with pytest.raises(DataError, match=r"nolab[.]tfrecords: record 0: missing .*dsize_dim0"):
        read_tfrecord_slices(tmp_path / "nolab.tfrecords")
    (tmp_path / "junk.tfrecords").write_bytes(record(b"\x0a\xff\xff\xff"))
    with pytest.raises(DataError, match=r"junk[.]tfrecords: record 0: not a valid tf.train.Example"):
        list(read_examples(tmp_path / "junk.tfrecords"))
    np.savez(tmp_path / "v.npz", np.zeros((4, 4, 2)), np.full((4, 4, 3), 1.0))
    with pytest.raises(DataError, match=r"v[.]npz: arr_1 shape"):
        read_sifa_npz(tmp_path / "v.npz", "ct")
    np.savez(tmp_path / "w.npz", np.zeros((4, 4, 2)), np.full((4, 4, 2), 7.0))
    with pytest.raises(DataError, match=r"w[.]npz: label values must be integers 0..5"):
        read_sifa_npz(tmp_path / "w.npz", "ct")
    (tmp_path / "x.npz").write_bytes(b"PK broken")
    with pytest.raises(DataError, match=r"x[.]npz: cannot read npz"):
        read_sifa_npz(tmp_path / "x.npz", "ct")
