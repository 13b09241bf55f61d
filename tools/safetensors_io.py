"""Minimal safetensors reader and writer (the `safetensors` package is not
available here).

Layout: 8-byte little-endian header length N, N bytes of JSON header
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}),
then the raw little-endian tensor data; offsets are relative to the data start.
The header is padded with spaces to a multiple of 8 bytes, as the reference
implementation does.

Tensors are handled as torch tensors; BF16 is stored bit-exactly.
"""

import json
import os
import struct

import torch

DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}

# torch.frombuffer cannot read bfloat16 directly on every version; go through int16.
_RAW = {torch.bfloat16: torch.int16, torch.float16: torch.int16}


def _to_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype in _RAW:
        t = t.view(_RAW[t.dtype])
    return t.numpy().tobytes()


def _from_bytes(buf, dtype, shape):
    raw = _RAW.get(dtype, dtype)
    if len(buf) == 0:
        return torch.zeros(shape, dtype=dtype)
    t = torch.frombuffer(bytearray(buf), dtype=raw).reshape(shape)
    return t.view(dtype) if raw is not dtype else t


def _header(entries, metadata):
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    header.update(entries)
    data = json.dumps(header, separators=(",", ":")).encode("utf-8")
    data += b" " * ((8 - len(data) % 8) % 8)
    return struct.pack("<Q", len(data)) + data


def save_file(tensors, path, metadata=None):
    """Write a dict name -> torch.Tensor as one safetensors file."""
    entries, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        if t.dtype not in NAMES:
            raise ValueError(f"{name}: dtype {t.dtype} not supported")
        blob = _to_bytes(t)
        entries[name] = {
            "dtype": NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    with open(path, "wb") as f:
        f.write(_header(entries, metadata))
        for b in blobs:
            f.write(b)


class StreamWriter:
    """Writes a safetensors file tensor by tensor without holding the data in
    memory: data goes to a temporary file first, the header is written on
    close()."""

    def __init__(self, path, metadata=None):
        self.path = path
        self.metadata = metadata
        self.tmp = path + ".data.tmp"
        self.data = open(self.tmp, "wb")
        self.entries = {}
        self.offset = 0

    def add(self, name, t):
        if name in self.entries:
            raise ValueError(f"duplicate tensor {name}")
        if t.dtype not in NAMES:
            raise ValueError(f"{name}: dtype {t.dtype} not supported")
        blob = _to_bytes(t)
        self.entries[name] = {
            "dtype": NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [self.offset, self.offset + len(blob)],
        }
        self.data.write(blob)
        self.offset += len(blob)

    @property
    def nbytes(self):
        return self.offset

    def close(self):
        self.data.close()
        with open(self.path, "wb") as out, open(self.tmp, "rb") as src:
            out.write(_header(self.entries, self.metadata))
            while True:
                chunk = src.read(1 << 24)
                if not chunk:
                    break
                out.write(chunk)
        os.remove(self.tmp)


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return header, 8 + n


def load_file(path, names=None):
    """Read a safetensors file into a dict name -> torch.Tensor (optionally
    only the given names)."""
    header, start = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            if name == "__metadata__" or (names is not None and name not in names):
                continue
            b, e = info["data_offsets"]
            f.seek(start + b)
            out[name] = _from_bytes(f.read(e - b), DTYPES[info["dtype"]], info["shape"])
    return out


def load_metadata(path):
    return read_header(path)[0].get("__metadata__", {})
