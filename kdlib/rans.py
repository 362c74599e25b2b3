"""Bounds-checked decoding, and GIL-free encoding, of CompressAI's rANS streams: ``rans.c``, compiled
on first use.

CompressAI's decoder has no end-of-stream check (a crafted stream makes it read past its buffer),
and no maintained library decodes its format with one, so kdlib carries this one small C function
(CompressAI's arithmetic, every read checked against the stream's real end; see ``rans.c``). It is
compiled with the system's C compiler into ``<KDLIB_CACHE>/lib/`` (where that cannot be written, a
private folder in the temporary one) the first time it is needed (named by the source's hash, so an
edited source is rebuilt), and called through ctypes, which releases the GIL: streams decode in
parallel on threads. The encoder (:func:`encode`) writes CompressAI's bytes
exactly; CompressAI's own holds the GIL, so images encoded one per thread took turns in it.
:func:`available` says whether it could be built; without a C compiler kdlib falls back to
CompressAI's coders (on a padded buffer for decoding, ``kdlib.entropy``).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from kdlib import data
from kdlib.io import atomic

SOURCE = Path(__file__).with_name("rans.c")
ERRORS = {-1: "is no rANS stream (whole 32-bit words, two at least)",
          -2: "starts or ends in a state no encoder writes",
          -3: "ran out: its symbols need more bytes than it holds",
          -4: "names a CDF table that does not exist",
          -5: "holds an escape-coded value wider than 32 bits",
          -6: "holds bytes that no symbol uses"}


class StreamError(ValueError):
    """A stream is not what CompressAI's rANS encoder writes (cut, altered or crafted)."""


def _folders() -> list[Path]:
    """Where the compiled decoder may live: the cache, else a private folder in the temporary one (an
    unwritable or misnamed ``KDLIB_CACHE`` must not stop the codec)."""
    return [data.cache_root() / "lib", Path(tempfile.gettempdir()) / f"kdlib-{os.getuid()}"]


def _is_private(folder: Path) -> bool:
    """Whether ``folder`` is ours alone (a shared temporary folder could hold someone else's library)."""
    stat = folder.stat()
    return stat.st_uid == os.getuid() and not stat.st_mode & 0o077


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    source = SOURCE.read_bytes()
    name = f"kdl_rans-{hashlib.sha256(source).hexdigest()[:12]}.so"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    for cache, folder in zip((True, False), _folders()):
        target = folder / name
        try:
            folder.mkdir(mode=0o700, parents=cache, exist_ok=True)
            if not (cache or _is_private(folder)):
                continue
            if not target.exists():
                if compiler is None:
                    return None
                with atomic(target) as tmp:
                    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)], check=True,
                                   capture_output=True)
            break
        except (OSError, subprocess.CalledProcessError):
            continue
    else:
        return None
    library = ctypes.CDLL(str(target))
    pointer = ctypes.c_void_p
    library.kdl_rans_decode.restype = ctypes.c_int64
    library.kdl_rans_decode.argtypes = [ctypes.c_char_p, ctypes.c_int64, pointer, ctypes.c_int64, pointer,
                                        pointer, ctypes.c_int32, ctypes.c_int32, pointer]
    library.kdl_rans_encode.restype = ctypes.c_int64
    library.kdl_rans_encode.argtypes = [pointer, pointer, ctypes.c_int64, pointer, pointer, pointer, ctypes.c_int32,
                                        ctypes.c_int32, pointer, ctypes.c_int64]
    return library


def available() -> bool:
    """Whether the bounds-checked decoder is built (a C compiler was found)."""
    return _library() is not None


class Tables:
    """CDF tables as the decoder reads them: one int32 row per table, padded to the widest, and
    each row's length. Checked once: every row starts at 0, rises strictly (no symbol of zero
    frequency) and ends at 2^16, so a crafted table cannot make the decoder divide by or look past
    anything."""

    def __init__(self, cdfs: list[list[int]], lengths: list[int]):
        width = max(lengths)
        self.rows = np.zeros((len(cdfs), width), np.int32)
        self.lengths = np.asarray(lengths, np.int32)
        for t, (cdf, n) in enumerate(zip(cdfs, lengths)):
            row = np.asarray(cdf[:n], np.int64)
            if n < 2 or len(row) != n or row[0] != 0 or row[-1] != 1 << 16 or (np.diff(row) <= 0).any():
                raise StreamError(f"CDF table {t} is invalid (a table starts at 0, rises strictly to 65536): "
                                  "the model's entropy tables are damaged")
            self.rows[t, :n] = row


def decode(string: bytes, indexes: np.ndarray, tables: Tables) -> np.ndarray:
    """The CDF positions of the ``len(indexes)`` symbols in ``string`` (int32), each decoded with table
    ``indexes[i]``; :class:`StreamError` unless the stream is exactly what an encoder writes."""
    out, code = call(string, len(string), indexes, tables)
    if code:
        raise StreamError(f"A latent stream of {len(string)} bytes {ERRORS.get(int(code), f'fails ({code})')}: "
                          "the file was cut or altered")
    return out


def call(stream: bytes | int, size: int, indexes: np.ndarray, tables: Tables) -> tuple[np.ndarray, int]:
    """``rans.c``'s decoder on ``size`` bytes at ``stream`` (bytes, or an address): (values, return code)."""
    library = _library()
    if library is None:
        raise RuntimeError("kdlib's rANS decoder could not be built: no C compiler (set CC)")
    indexes = np.ascontiguousarray(indexes, np.int32).reshape(-1)
    out = np.empty(len(indexes), np.int32)
    code = library.kdl_rans_decode(stream if isinstance(stream, bytes) else ctypes.c_char_p(stream), size,
                                   indexes.ctypes.data, len(indexes), tables.rows.ctypes.data,
                                   tables.lengths.ctypes.data, tables.rows.shape[1], len(tables.rows), out.ctypes.data)
    return out, int(code)


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: Tables, offsets: np.ndarray) -> bytes:
    """CompressAI's ``RansEncoder().encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)``,
    byte for byte (``symbols``: values before their table's offset), without holding the GIL."""
    library = _library()
    if library is None:
        raise RuntimeError("kdlib's rANS coder could not be built: no C compiler (set CC)")
    symbols = np.ascontiguousarray(symbols, np.int32).reshape(-1)
    indexes = np.ascontiguousarray(indexes, np.int32).reshape(-1)
    offsets = np.ascontiguousarray(offsets, np.int32)
    for capacity in (len(symbols) + 16, 11 * len(symbols) + 16):  # one word per symbol, rarely more
        out = np.empty(capacity, np.uint32)
        words = library.kdl_rans_encode(symbols.ctypes.data, indexes.ctypes.data, len(symbols), tables.rows.ctypes.data,
                                        tables.lengths.ctypes.data, offsets.ctypes.data, tables.rows.shape[1],
                                        len(tables.rows), out.ctypes.data, capacity)
        if words >= 0:
            return out[capacity - words:].tobytes()
        if words != -7:
            raise StreamError(f"cannot encode: {ERRORS.get(int(words), words)}")
    raise RuntimeError("rANS encoder output exceeded its bound")
