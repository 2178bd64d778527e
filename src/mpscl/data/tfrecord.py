"""TFRecord files and tf.train.Example messages, read without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little endian) | uint32 masked crc32c(length bytes)
    data[length]                  | uint32 masked crc32c(data)

Both checksums are verified. An Example is the protobuf
``Example{Features features=1}``, ``Features{map<string, Feature> feature=1}``,
``Feature{oneof: BytesList bytes_list=1; FloatList float_list=2; Int64List int64_list=3}``;
this module decodes exactly that with a minimal wire-format parser.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

import numpy as np

from .errors import DataError

# ----------------------------------------------------------------------------- crc32c
_POLY = 0x82F63B78  # Castagnoli, reflected


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _make_table()
_TABLE_LIST = _TABLE.tolist()
_CHUNK = 1024  # bytes per lane of the vectorised update
_SHIFT_TABLES: Dict[int, List[List[int]]] = {}


def _update_py(reg: int, data: bytes) -> int:
    t = _TABLE_LIST
    for b in data:
        reg = (reg >> 8) ^ t[(reg ^ b) & 0xFF]
    return reg


def _shift_tables(n: int) -> List[List[int]]:
    """Tables applying "feed n zero bytes" (a linear map of the register) byte by byte."""
    if n not in _SHIFT_TABLES:
        zeros = bytes(n)
        basis = [_update_py(1 << k, zeros) for k in range(32)]
        tables = []
        for byte in range(4):
            row = []
            for v in range(256):
                acc = 0
                for bit in range(8):
                    if v >> bit & 1:
                        acc ^= basis[8 * byte + bit]
                row.append(acc)
            tables.append(row)
        _SHIFT_TABLES[n] = tables
    return _SHIFT_TABLES[n]


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``; ``crc32c(b"123456789") == 0xE3069283``.

    Long inputs are split into equal lanes whose CRCs numpy computes side by side; the
    lanes are then chained with the (linear) zero-feed operator, so no byte is handled
    by a Python loop except a short head.
    """
    data = bytes(data)
    n = len(data)
    reg = 0xFFFFFFFF
    lanes = n // _CHUNK
    if lanes < 8:
        return _update_py(reg, data) ^ 0xFFFFFFFF
    head = n - lanes * _CHUNK
    reg = _update_py(reg, data[:head])
    block = np.frombuffer(data, dtype=np.uint8, offset=head).reshape(lanes, _CHUNK)
    lane_reg = np.zeros(lanes, dtype=np.uint32)
    for j in range(_CHUNK):  # CRC of each lane from a zero register, all lanes at once
        lane_reg = (lane_reg >> 8) ^ _TABLE[(lane_reg ^ block[:, j]) & 0xFF]
    t0, t1, t2, t3 = _shift_tables(_CHUNK)
    for lr in lane_reg.tolist():  # reg(A||B) = shift_len(B)(reg(A)) ^ reg0(B)
        reg = (t0[reg & 0xFF] ^ t1[(reg >> 8) & 0xFF] ^ t2[(reg >> 16) & 0xFF]
               ^ t3[reg >> 24] ^ lr)
    return reg ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: crc32c rotated right by 15 bits plus 0xa282ead8."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- framing
def iter_records(path: Union[str, Path], verify: bool = True) -> Iterator[bytes]:
    """Yield the payload of every record of a TFRecord file, checking framing and CRCs."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read TFRecord file: {e}") from e
    if not buf:
        raise DataError(f"{path}: empty file, no TFRecord records")
    pos, index, n = 0, 0, len(buf)
    while pos < n:
        where = f"{path}: record {index} (byte offset {pos})"
        if n - pos < 12:
            raise DataError(f"{where}: truncated record header ({n - pos} of 12 bytes)")
        length_bytes = buf[pos:pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (len_crc,) = struct.unpack("<I", buf[pos + 8:pos + 12])
        if verify and masked_crc32c(length_bytes) != len_crc:
            raise DataError(f"{where}: corrupt record header (length checksum mismatch); "
                            "not a TFRecord file or damaged")
        start = pos + 12
        if start + length + 4 > n:
            raise DataError(f"{where}: truncated record: needs {length + 4} bytes, "
                            f"only {n - start} left in the file")
        payload = buf[start:start + length]
        (data_crc,) = struct.unpack("<I", buf[start + length:start + length + 4])
        if verify and masked_crc32c(payload) != data_crc:
            raise DataError(f"{where}: corrupt record data (checksum mismatch)")
        yield payload
        pos = start + length + 4
        index += 1


# ----------------------------------------------------------------------------- protobuf
class _WireError(Exception):
    pass


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint too long")


def _fields(buf: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """Yield (field number, wire type, value) of a protobuf message."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > n:
                raise _WireError("truncated 64-bit field")
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > n:
                raise _WireError(f"truncated field {field} ({length} bytes announced)")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            if pos + 4 > n:
                raise _WireError("truncated 32-bit field")
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise _WireError(f"unsupported wire type {wire} (field {field})")
        yield field, wire, value


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _feature(buf: bytes):
    kind, value = None, None
    for field, wire, payload in _fields(buf):
        if wire != 2 or field not in (1, 2, 3):
            continue
        if field == 1:  # BytesList{repeated bytes value = 1}
            kind = "bytes"
            value = [v for f, w, v in _fields(payload) if f == 1 and w == 2]
        elif field == 2:  # FloatList{repeated float value = 1 [packed]}
            kind, parts = "float", []
            for f, w, v in _fields(payload):
                if f == 1 and w == 2:
                    if len(v) % 4:
                        raise _WireError("packed float list length is not a multiple of 4")
                    parts.append(np.frombuffer(v, dtype="<f4"))
                elif f == 1 and w == 5:
                    parts.append(np.frombuffer(v, dtype="<f4"))
            value = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        else:  # Int64List{repeated int64 value = 1 [packed]}
            kind, ints = "int64", []
            for f, w, v in _fields(payload):
                if f == 1 and w == 2:
                    p = 0
                    while p < len(v):
                        x, p = _varint(v, p)
                        ints.append(_signed64(x))
                elif f == 1 and w == 0:
                    ints.append(_signed64(v))
            value = np.asarray(ints, dtype=np.int64)
    if kind is None:
        return np.zeros(0, np.float32)  # an empty Feature
    return value


def parse_example(buf: bytes) -> Dict[str, Union[List[bytes], np.ndarray]]:
    """Decode a serialized tf.train.Example into ``{name: list of bytes | float32 | int64 array}``."""
    out: Dict[str, Union[List[bytes], np.ndarray]] = {}
    for field, wire, features in _fields(buf):
        if field != 1 or wire != 2:
            continue
        for f, w, entry in _fields(features):
            if f != 1 or w != 2:
                continue
            key, value = None, b""
            for ef, ew, ev in _fields(entry):
                if ef == 1 and ew == 2:
                    key = ev.decode("utf-8")
                elif ef == 2 and ew == 2:
                    value = ev
            if key is None:
                raise _WireError("feature map entry without a key")
            out[key] = _feature(value)
    return out


def read_examples(path: Union[str, Path], verify: bool = True) -> Iterator[Dict]:
    """Yield every tf.train.Example of a TFRecord file as a dict (see :func:`parse_example`)."""
    for index, payload in enumerate(iter_records(path, verify)):
        try:
            yield parse_example(payload)
        except (_WireError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: record {index}: not a valid tf.train.Example: {e}") from e
