"""Hostile inputs through the command line: what the user sees for each.

Every row runs ``mpscl ...`` in-process (``cli.main``) on one broken input and checks the
exit code and that stderr names the file and says what is wrong. No row may run code from
the input: the malicious pickles, npz object arrays and YAML tags all try to create a
marker file, which must never appear.

``MPSCL_HOSTILE_TABLE=path.md pytest tests/reliability/test_hostile_inputs.py`` also writes
the table of inputs and messages (docs/RELIABILITY.md is made from it).
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

import nibabel as nib
import numpy as np
import pytest
import torch

from mpscl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mpscl.cli import main
from mpscl.data.tfrecord import masked_crc32c

from reliability_helpers import SIZE, train_argv

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"mpscl-hostile-marker-{os.getpid()}"


class Evil:
    """Unpickling this runs ``touch MARKER``."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


# ----------------------------------------------------------------------------- writers
def nifti(path: Path, arr, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


IMG = np.random.default_rng(0).normal(100, 20, (16, 16, 4)).astype(np.float32)
LAB = np.zeros((16, 16, 4), np.int16)
LAB[4:8, 4:8] = 200
LAB[9:12, 9:12] = 500


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _example(data: np.ndarray, label: np.ndarray, dshape=None) -> bytes:
    feats = {"data_vol": ("b", data.astype("<f4").tobytes()),
             "label_vol": ("b", label.astype("<f4").tobytes())}
    for i in range(3):
        feats[f"dsize_dim{i}"] = ("i", (dshape or data.shape)[i])
        feats[f"lsize_dim{i}"] = ("i", (dshape or label.shape)[i])
    entries = b""
    for key, (kind, v) in feats.items():
        feat = _ld(1, _ld(1, v)) if kind == "b" else _ld(3, _ld(1, _varint(v)))
        entries += _ld(1, _ld(1, key.encode()) + _ld(2, feat))
    return _ld(1, entries)


def _record(payload: bytes) -> bytes:
    n = struct.pack("<Q", len(payload))
    return n + struct.pack("<I", masked_crc32c(n)) + payload + struct.pack("<I", masked_crc32c(payload))


def good_tfrecord() -> bytes:
    data = np.random.default_rng(1).normal(0, 1, (8, 8, 3)).astype(np.float32)
    lab = np.zeros((8, 8, 3), np.float32)
    lab[2:5, 2:5, :] = 1
    return _record(_example(data, lab))


def npy_member(shape, descr="<f8", data=b"") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
    return b.getvalue() + data


# ----------------------------------------------------------------------------- rows
@dataclass
class Row:
    id: str
    group: str
    what: str
    build: Callable  # (ctx) -> argv
    rc: int = 2
    expect: tuple = ()  # substrings of stderr (rc 2) or stdout (rc 0)


def _prepare(ctx, image_name="c1_image.nii.gz", label=True, classes="200=MYO,500=LV"):
    argv = ["prepare", "--images", str(ctx.d / image_name.replace("c1", "c{case}")),
            "--classes", classes, "--out", str(ctx.d / "prepared"), "--size", "32"]
    if label:
        argv += ["--labels", str(ctx.d / "c{case}_label.nii.gz")]
    return argv


def _nifti_case(image=None, raw: bytes = None, label=LAB, name="c1_image.nii.gz", **kw):
    def build(ctx):
        p = ctx.d / name
        if raw is not None:
            p.write_bytes(raw(ctx) if callable(raw) else raw)
        else:
            nifti(p, image)
        nifti(ctx.d / "c1_label.nii.gz", label)
        return _prepare(ctx, name, **kw)
    return build


def _good_gz() -> bytes:
    return gzip.compress(nib.Nifti1Image(IMG, np.eye(4)).to_bytes(), mtime=0)


def _header_only(shape, body: int, compress: bool) -> bytes:
    hdr = nib.Nifti1Image(IMG, np.eye(4)).header.copy()
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352  # data right after the header and its 4-byte extension flag
    raw = hdr.binaryblock + b"\0" * 4 + IMG.tobytes()[:body]
    return gzip.compress(raw, mtime=0) if compress else raw


def _sifa(name: str, content: Callable[[Path], None]):
    def build(ctx):
        p = ctx.d / name
        content(p)
        return ["prepare-sifa", str(p), "--modality", "ct", "--out", str(ctx.d / "prepared")]
    return build


def _write(data: bytes):
    return lambda p: p.write_bytes(data)


def _npz(**arrays):
    return lambda p: np.savez(p, **arrays)


def _zip(**members):
    def w(p):
        with zipfile.ZipFile(p, "w") as z:
            for k, v in members.items():
                z.writestr(k + ".npy", v)
    return w


def _predict(ckpt_fn):
    def build(ctx):
        ck = ckpt_fn(ctx)
        img = nifti(ctx.d / "scan.nii.gz", IMG)
        return ["predict", "--checkpoint", str(ck), str(img), "-o", str(ctx.d / "pred"), "--device", "cpu"]
    return build


def _evaluate(ckpt_fn):
    def build(ctx):
        return ["evaluate", "--checkpoint", str(ckpt_fn(ctx)), "--data", str(ctx.sets["ct"]),
                "--out", str(ctx.d / "eval"), "--device", "cpu"]
    return build


def _evil_torch(ctx):
    p = ctx.d / "final.pt"
    torch.save({"format": "mpscl-checkpoint", "version": 1, "model": Evil()}, p)
    return p


def _evil_pickle(ctx):
    p = ctx.d / "final.pt"
    p.write_bytes(pickle.dumps(Evil()))
    return p


def _foreign(ctx):
    p = ctx.d / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(2, 2)}, "epoch": 3}, p)
    return p


def _truncated_ckpt(ctx):
    p = ctx.d / "final.pt"
    p.write_bytes(ctx.ckpt.read_bytes()[:50_000])
    return p


def _no_classes(ctx):
    p = ctx.d / "final.pt"
    ck = load_checkpoint(ctx.ckpt)
    del ck["classes"]
    torch.save(ck, p)
    return p


def _other_model(ctx):
    p = ctx.d / "final.pt"
    ck = load_checkpoint(ctx.ckpt)
    ck["config"]["model"]["width"] = 16
    torch.save(ck, p)
    return p


def _dataset_copy(ctx, corrupt: Callable[[Path], None]):
    d = ctx.d / "ct"
    shutil.copytree(ctx.sets["ct"], d)
    corrupt(d)
    return ["evaluate", "--checkpoint", str(ctx.ckpt), "--data", str(d), "--out", str(ctx.d / "eval"),
            "--device", "cpu"]


def _case_npz(d: Path) -> Path:
    return d / json.loads((d / "manifest.json").read_text())["cases"][0]["file"]


def _resave_case(d: Path, **changes):
    p = _case_npz(d)
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(p, **arrays)


def _yaml(text: str):
    def build(ctx):
        p = ctx.d / "my.yaml"
        p.write_text(text)
        return ["config", "--preset", "cpu", "--config", str(p)]
    return build


def _resume_evil(ctx):
    out = ctx.d / "run"
    argv = train_argv(ctx.sets, out, "--set", "train.iters=0", method="source-only")
    assert main(argv) == 0  # a finished run folder, with its config
    shutil.rmtree(out / "source-only")
    (out / "source-only").mkdir()
    (out / "source-only" / "last.pt").write_bytes(pickle.dumps(Evil(), protocol=2))
    (out / "final.pt").unlink()
    return argv


ROWS: List[Row] = [
    # --- NIfTI (mpscl prepare)
    Row("nifti-truncated", "NIfTI", "`.nii.gz` cut in half", _nifti_case(raw=lambda c: _good_gz()[:len(_good_gz()) // 2]),
        expect=("c1_image.nii.gz: cannot read NIfTI file (corrupt or truncated?)",)),
    Row("nifti-random", "NIfTI", "3000 random bytes named `.nii.gz`",
        _nifti_case(raw=np.random.default_rng(2).bytes(3000)),
        expect=("c1_image.nii.gz: cannot read NIfTI file (corrupt or truncated?)", "not a gzip file")),
    Row("nifti-nan", "NIfTI", "image with one NaN voxel",
        _nifti_case(np.where(np.arange(IMG.size).reshape(IMG.shape) == 7, np.nan, IMG).astype(np.float32)),
        expect=("c1_image.nii.gz: contains non-finite voxels (1 NaN, 0 Inf)",)),
    Row("nifti-empty", "NIfTI", "0-size volume, shape 16 x 16 x 0",
        _nifti_case(np.zeros((16, 16, 0), np.float32), label=np.zeros((16, 16, 0), np.int16)),
        expect=("c1_image.nii.gz: the image array is empty (header shape (16, 16, 0))",)),
    Row("nifti-1-slice", "NIfTI", "1-slice volume, 16 x 16 x 1 (valid)",
        _nifti_case(IMG[:, :, :1].copy(), label=LAB[:, :, :1].copy()), rc=0,
        expect=("prepared 1 cases, 1 slices of 32x32",)),
    Row("nifti-10000-slices", "NIfTI", "header claims 16 x 16 x 10,000, file holds 4 slices (`.nii`)",
        _nifti_case(raw=_header_only((16, 16, 10000), IMG.nbytes, False), name="c1_image.nii"),
        expect=("c1_image.nii: cannot read NIfTI file (corrupt or truncated?)",
                "Expected 10240000 bytes, got 4096 bytes")),
    Row("nifti-10000-slices-gz", "NIfTI", "the same, gzipped (`.nii.gz`)",
        _nifti_case(raw=_header_only((16, 16, 10000), IMG.nbytes, True)),
        expect=("c1_image.nii.gz: cannot read NIfTI file (corrupt or truncated?)", "10240000 bytes")),
    Row("nifti-absurd", "NIfTI", "header claims 32767 x 32767 x 10000 (43 TB as float32)",
        _nifti_case(raw=_header_only((32767, 32767, 10000), 64, True)),
        expect=("c1_image.nii.gz: the header claims shape (32767, 32767, 10000) (1.07e+13 voxels)",
                "is the header corrupt?")),
    Row("nifti-4d", "NIfTI", "4D image with 3 channels, 16 x 16 x 4 x 3",
        _nifti_case(np.repeat(IMG[..., None], 3, axis=3)),
        expect=("c1_image.nii.gz: expected a 3D volume", "got shape (16, 16, 4, 3)")),
    Row("nifti-complex", "NIfTI", "complex64 voxels", _nifti_case(IMG.astype(np.complex64)),
        expect=("c1_image.nii.gz: voxel type complex64 is not a real number type",)),
    Row("labels-fractional", "NIfTI", "label map of floats with fractions (an image given as labels)",
        _nifti_case(IMG, label=LAB.astype(np.float32) + 0.37),
        expect=("c1_label.nii.gz: label values must be integers, found [0.37",
                "is this an image rather than a label?")),
    # --- class maps (mpscl prepare --classes)
    Row("classmap-dup-value", "class map", "`--classes 200=MYO,200=LV`",
        _nifti_case(IMG, classes="200=MYO,200=LV"),
        expect=("class map '200=MYO,200=LV': value 200 is given twice",)),
    Row("classmap-dup-name", "class map", "`--classes 200=MYO,500=myo`",
        _nifti_case(IMG, classes="200=MYO,500=myo"),
        expect=("class map '200=MYO,500=myo': class name 'myo' is given twice",)),
    # --- TFRecord (mpscl prepare-sifa)
    Row("tfrecord-truncated", "TFRecord", "record cut 10 bytes short",
        _sifa("ct_1.tfrecords", lambda p: p.write_bytes(good_tfrecord()[:-10])),
        expect=("ct_1.tfrecords: record 0 (byte offset 0): truncated record",)),
    Row("tfrecord-bad-crc", "TFRecord", "one payload byte changed (data CRC mismatch)",
        _sifa("ct_1.tfrecords", lambda p: p.write_bytes(
            (lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:])(good_tfrecord()))),
        expect=("ct_1.tfrecords: record 0 (byte offset 0): corrupt record data (checksum mismatch)",)),
    Row("tfrecord-random", "TFRecord", "random bytes named `.tfrecords`",
        _sifa("ct_1.tfrecords", _write(np.random.default_rng(3).bytes(500))),
        expect=("ct_1.tfrecords: record 0 (byte offset 0): corrupt record header",)),
    Row("tfrecord-absurd-shape", "TFRecord", "record claiming 100000 x 100000 x 3 over 8 x 8 x 3 floats",
        _sifa("ct_1.tfrecords", lambda p: p.write_bytes(_record(_example(
            np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32), (100000, 100000, 3))))),
        expect=("ct_1.tfrecords: record 0: data_vol holds 768 bytes, its shape (100000, 100000, 3) needs",)),
    # --- npz (mpscl prepare-sifa)
    Row("npz-missing-arr_1", "npz", "`.npz` without `arr_1` (labels)",
        _sifa("ct_1.npz", _npz(arr_0=np.zeros((8, 8, 2)))),
        expect=("ct_1.npz: expected arrays arr_0 (image) and arr_1 (labels), found ['arr_0']",)),
    Row("npz-object-array", "npz", "`arr_0` an object array holding a malicious pickle",
        _sifa("ct_1.npz", _npz(arr_0=np.array([Evil()], dtype=object), arr_1=np.zeros((8, 8, 2))),),
        expect=("ct_1.npz: refused: it holds Python object arrays",)),
    Row("npz-truncated", "npz", "`.npz` cut in half",
        _sifa("ct_1.npz", lambda p: (np.savez(p, arr_0=np.ones((8, 8, 2)), arr_1=np.zeros((8, 8, 2))),
                                     p.write_bytes(p.read_bytes()[:700]))),
        expect=("ct_1.npz: cannot read npz file (corrupt or truncated?)",)),
    Row("npz-random", "npz", "random bytes named `.npz`",
        _sifa("ct_1.npz", _write(np.random.default_rng(4).bytes(500))),
        expect=("ct_1.npz: cannot read npz file: it is neither a zip nor an .npy (corrupt?); "
                "it was not read as a pickle",)),
    Row("npz-string-dtype", "npz", "`arr_1` labels stored as strings",
        _sifa("ct_1.npz", _npz(arr_0=np.zeros((8, 8, 2)), arr_1=np.full((8, 8, 2), "1"))),
        expect=("ct_1.npz: arr_1 has dtype <U1; expected real numbers",)),
    Row("npz-10000-slices", "npz", "`arr_0` header claims 48 x 48 x 10,000, holds 64 bytes",
        _sifa("ct_1.npz", _zip(arr_0=npy_member((48, 48, 10000), data=b"\0" * 64),
                               arr_1=npy_member((48, 48, 10000), data=b"\0" * 64))),
        expect=("ct_1.npz: cannot read npz file (corrupt or truncated?)", "EOF")),
    Row("npz-empty", "npz", "0-size volume, 8 x 0 x 2",
        _sifa("ct_1.npz", _npz(arr_0=np.zeros((8, 0, 2)), arr_1=np.zeros((8, 0, 2)))),
        expect=("ct_1.npz: arr_0 must be an H x W x D volume, got shape (8, 0, 2)",)),
    Row("npz-label-values", "npz", "labels outside the release's 0..5",
        _sifa("ct_1.npz", _npz(arr_0=np.zeros((8, 8, 2)), arr_1=np.full((8, 8, 2), 205.0))),
        expect=("ct_1.npz: label values must be integers 0..5, found [205.0]",)),
    # --- checkpoints
    Row("ckpt-malicious-predict", "checkpoint", "`mpscl predict` with a torch checkpoint holding a "
        "malicious pickle", _predict(_evil_torch),
        expect=("final.pt: refused to load", "nothing in it was run",
                "Trying to load unsupported GLOBAL")),
    Row("ckpt-malicious-evaluate", "checkpoint", "`mpscl evaluate`, same file", _evaluate(_evil_torch),
        expect=("final.pt: refused to load", "nothing in it was run")),
    Row("ckpt-raw-pickle", "checkpoint", "`mpscl predict` with a plain `pickle.dumps` of the payload",
        _predict(_evil_pickle), expect=("final.pt: refused to load", "nothing in it was run")),
    Row("ckpt-malicious-init", "checkpoint", "`mpscl train --init` with the malicious checkpoint",
        lambda ctx: train_argv(ctx.sets, ctx.d / "run", "--init", str(_evil_torch(ctx))),
        expect=("final.pt: refused to load",)),
    Row("ckpt-malicious-resume", "checkpoint", "`mpscl train` resuming a `last.pt` replaced by a "
        "malicious pickle", _resume_evil, expect=("source-only/last.pt: refused to load",)),
    Row("ckpt-foreign", "checkpoint", "a torch checkpoint of another program (`{'state_dict', 'epoch'}`)",
        _predict(_foreign), expect=("resnet.pth: not an mpscl checkpoint (no 'mpscl-checkpoint' header)",)),
    Row("ckpt-truncated", "checkpoint", "`final.pt` cut to 50 kB", _predict(_truncated_ckpt),
        expect=("final.pt: not a readable checkpoint (corrupt or truncated?)",)),
    Row("ckpt-no-classes", "checkpoint", "mpscl checkpoint without `classes`", _predict(_no_classes),
        expect=("final.pt: not a model checkpoint: it needs 'model' (state dict), 'classes'",)),
    Row("ckpt-other-model", "checkpoint", "weights of another width than its config says",
        _predict(_other_model), expect=("final.pt: weights do not fit the stored model config (",
                                        "of another shape")),
    # --- configs
    Row("yaml-python-tag", "config", "YAML with `!!python/object/apply:os.system`",
        _yaml(f"model: !!python/object/apply:os.system ['touch {MARKER}']\n"),
        expect=("my.yaml: not valid YAML for a config (line 1): could not determine a constructor "
                "for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
                "Python object tags are refused and nothing was constructed")),
    Row("yaml-typo", "config", "YAML key `train: {iter: 5}`", _yaml("train: {iter: 5}\n"),
        expect=("my.yaml: unknown config key 'train.iter'; did you mean 'train.iters'?",)),
    Row("yaml-range", "config", "YAML `data: {size: 100000}`", _yaml("data: {size: 100000}\n"),
        expect=("my.yaml: data.size = 100000 is out of range [32, 2048]",)),
    Row("yaml-type", "config", "YAML `train: {iters: many}`", _yaml("train: {iters: many}\n"),
        expect=("my.yaml: train.iters must be int, got 'many'",)),
    Row("yaml-not-mapping", "config", "YAML file that is a list", _yaml("- 1\n- 2\n"),
        expect=("my.yaml: expected a mapping of sections, got list",)),
    # --- prepared datasets (mpscl evaluate --data)
    Row("dataset-manifest", "prepared dataset", "`manifest.json` that is not JSON",
        lambda ctx: _dataset_copy(ctx, lambda d: (d / "manifest.json").write_text("{not json")),
        expect=("manifest.json: unreadable manifest",)),
    Row("dataset-case-truncated", "prepared dataset", "a case `.npz` cut in half",
        lambda ctx: _dataset_copy(ctx, lambda d: _case_npz(d).write_bytes(
            _case_npz(d).read_bytes()[: _case_npz(d).stat().st_size // 2])),
        expect=(".npz: unreadable case file",)),
    Row("dataset-case-pickle", "prepared dataset", "a case `.npz` whose image is a malicious object array",
        lambda ctx: _dataset_copy(ctx, lambda d: _resave_case(d, image=np.array([Evil()], dtype=object))),
        expect=(".npz: unreadable case file", "allow_pickle=False")),
    Row("dataset-case-dtype", "prepared dataset", "a case image stored as float64",
        lambda ctx: _dataset_copy(ctx, lambda d: _resave_case(
            d, image=np.zeros((16, SIZE, SIZE), np.float64))),
        expect=(".npz: 'image' must be float32 (16, 48, 48), got float64 (16, 48, 48)",)),
]


class Ctx:
    def __init__(self, d, sets, ckpt):
        self.d, self.sets, self.ckpt = d, sets, ckpt


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, phantom_sets):
    """A real (untrained) final.pt for the phantom's classes at the phantom's size."""
    from mpscl.config import build_config
    from mpscl.data import PreparedDataset
    from mpscl.models import build_segmenter
    ds = PreparedDataset(phantom_sets["ct"])
    cfg = build_config("cpu", sets=[f"data.size={SIZE}", "model.width=8"])
    torch.manual_seed(0)
    model = build_segmenter(cfg.model, ds.num_classes)
    p = tmp_path_factory.mktemp("ckpt") / "final.pt"
    save_checkpoint(p, {"model": model.state_dict(), "config": cfg.to_dict(), "classes": ds.classes,
                        "label_values": ds.label_values, "method": "source-only", "stage": "final",
                        "iteration": 0, "axis": 2})
    return p


TABLE: List[tuple] = []


@pytest.fixture(scope="module", autouse=True)
def write_table():
    yield
    dest = os.environ.get("MPSCL_HOSTILE_TABLE")
    if dest and TABLE:
        lines = ["| # | input | command | exit | what the user saw |", "|---|---|---|---|---|"]
        for i, (row, cmd, rc, msg) in enumerate(TABLE, 1):
            msg = msg.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {i} | {row.what} | `mpscl {cmd}` | {rc} | `{msg}` |")
        Path(dest).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input(row, tmp_path, phantom_sets, tiny_checkpoint, capsys):
    MARKER.unlink(missing_ok=True)
    ctx = Ctx(tmp_path / "in", phantom_sets, tiny_checkpoint)
    ctx.d.mkdir()
    argv = row.build(ctx)
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert not MARKER.exists(), "the input ran code"
    assert rc == row.rc, f"exit {rc}: {err or out}"
    assert "Traceback" not in err
    if rc == 2:  # one line, besides any progress bar
        errors = [ln for ln in err.splitlines() if ln.startswith("mpscl ")]
        assert len(errors) == 1 and errors[0].startswith(f"mpscl {argv[0]}: error: "), err
        assert err.rstrip().splitlines()[-1] == errors[0], f"a message of several lines: {err}"
        msg = errors[0]
    else:
        msg = out.strip().splitlines()[-1]
    for s in row.expect:
        assert s in msg, f"{s!r} not in {msg!r}"
    TABLE.append((row, argv[0], rc, msg.replace(str(tmp_path) + "/", "").replace(
        str(phantom_sets["ct"]), "ct").replace(str(tiny_checkpoint), "final.pt")))


def test_load_checkpoint_refuses_malicious_pickles_without_running_them(tmp_path):
    MARKER.unlink(missing_ok=True)
    ctx = Ctx(tmp_path, None, None)
    for make in (_evil_torch, _evil_pickle):
        with pytest.raises(CheckpointError, match=r"final\.pt: refused to load.*nothing in it was run"):
            load_checkpoint(make(ctx))
        assert not MARKER.exists()
    # the same payload does run when unpickled unsafely: the test input is really hostile
    torch.load(_evil_torch(ctx), weights_only=False)
    assert MARKER.exists()
    MARKER.unlink()


def test_prepare_sifa_takes_several_files(tmp_path):
    """``mpscl prepare-sifa A.tfrecords B.tfrecords`` (the shell's glob expansion)."""
    for n in ("ct_1", "ct_2"):
        (tmp_path / f"{n}.tfrecords").write_bytes(good_tfrecord() * 2)
    rc = main(["prepare-sifa", str(tmp_path / "ct_1.tfrecords"), str(tmp_path / "ct_2.tfrecords"),
               "--modality", "ct", "--out", str(tmp_path / "p")])
    assert rc == 0
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert [c["case"] for c in m["cases"]] == ["ct_1", "ct_2"] and m["totals"]["slices"] == 4
