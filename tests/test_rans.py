"""kdlib's bounds-checked rANS decoder: CompressAI's symbols on real streams, and no read past the
end of any stream, proven with a guard page right after its last byte."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from kdlib import entropy, rans
from kdlib.models import load_model

pytestmark = pytest.mark.skipif(not rans.available(), reason="no C compiler: kdlib falls back on CompressAI's decoder")


def real_stream(model, seed=0, size=128):
    """(y stream, its scale indexes, the model's tables) of a smooth random image."""
    torch.manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, size // 16, size // 16), size=(size, size), mode="bilinear")
    enc = entropy.encode(model, x)
    z_hat = entropy.decode_hyper(model, enc["strings"][1], enc["shape"])
    indexes = entropy.scale_indexes(model, z_hat)[0]
    cdfs, lengths, _, _ = entropy._tables(model)
    return enc["strings"][0][0], indexes, cdfs, lengths


def test_the_same_symbols_as_compressais_decoder_on_real_streams():
    from compressai.ans import RansDecoder

    model = load_model("S16")
    for seed in range(3):
        stream, indexes, cdfs, lengths = real_stream(model, seed)
        theirs = RansDecoder()
        theirs.set_stream(stream)
        expected = theirs.decode_stream(indexes.reshape(-1).tolist(), cdfs, lengths, [0] * len(cdfs))
        ours = rans.decode(stream, indexes.numpy(), rans.Tables(cdfs, lengths))
        assert ours.tolist() == expected


def test_the_encoder_writes_compressais_bytes_escapes_included():
    """kdlib's GIL-free encoder against CompressAI's RansEncoder on random symbols, from tight ones to
    escapes of up to 5 groups (|value| near 2^15), with every table of two trained models."""
    from compressai.ans import RansEncoder

    rng = np.random.default_rng(0)
    for name in ("S16", "T5"):
        model = load_model(name)
        tables, (cdfs, lengths, offsets, _) = entropy._rans_tables(model), entropy._tables(model)
        for trial, spread in enumerate((0.5, 3, 40, 3000, 30000) * 4):
            n = int(rng.integers(1, 4000))
            indexes = rng.integers(0, len(lengths), n).astype(np.int32)
            symbols = np.clip(rng.normal(0, spread, n).round(), -32767, 32767).astype(np.int32)
            expected = RansEncoder().encode_with_indexes(symbols.tolist(), indexes.tolist(), cdfs, lengths, offsets)
            assert rans.encode(symbols, indexes, tables, np.asarray(offsets, np.int32)) == expected, (name, trial)


def test_a_table_of_zero_frequency_is_refused():
    with pytest.raises(rans.StreamError, match="CDF table 1 is invalid"):
        rans.Tables([[0, 30000, 65536], [0, 100, 100, 65536]], [3, 4])


GUARDED = r"""
import ctypes, json, mmap, sys
import numpy as np
from kdlib import entropy, rans
from kdlib.models import load_model

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

def guarded(stream):
    # the stream's last byte is the last byte before a page that faults on any access
    pages = -(-max(len(stream), 1) // PAGE) + 1
    buffer = mmap.mmap(-1, pages * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    assert libc.mprotect(base + (pages - 1) * PAGE, PAGE, 0) == 0
    start = (pages - 1) * PAGE - len(stream)
    buffer[start:start + len(stream)] = stream
    return buffer, base + start

model = load_model("S16")
cdfs, lengths, _, _ = entropy._tables(model)
tables = rans.Tables(cdfs, lengths)
streams = json.loads(sys.stdin.read())
indexes = np.load(sys.argv[1])
outcomes = {}
for name, (hex_stream, count) in streams.items():
    stream = bytes.fromhex(hex_stream)
    buffer, address = guarded(stream)
    _, code = rans.call(address, len(stream), np.resize(indexes, count), tables)
    outcomes[name] = code
print(json.dumps(outcomes))
"""


def crafted_streams(stream: bytes, symbols: int) -> dict[str, tuple[str, int]]:
    """Streams no encoder wrote, each with the symbol count it is decoded for (a Kodak image's y, and
    a 4096x4096 image's: 12.6 M symbols): every class of initial state, zero and all-ones tails,
    cut and altered real streams."""
    rng = np.random.default_rng(0)
    big = 192 * 256 * 256
    states = [0, 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    states += [int(v) for v in rng.integers(0, 1 << 63, 20, dtype=np.uint64)] + [int(rng.integers(0, 1 << 31))]
    tails = {"none": b"", "zeros": bytes(4096), "ones": b"\xff" * 4096, "random": rng.bytes(4096)}
    out = {}
    for state in states:
        for tail_name, tail in tails.items():
            for count in (symbols, big):
                out[f"state{state:x}-{tail_name}-{count}"] = ((state.to_bytes(8, "little") + tail).hex(), count)
    for n in (8, 12, 64, 65536):
        out[f"allones{n}"] = ((b"\xff" * n).hex(), big)
        out[f"zeros{n}"] = (bytes(n).hex(), big)
    for k in range(30):
        cut = int(rng.integers(2, len(stream) // 4)) * 4
        out[f"cut{k}"] = (stream[:cut].hex(), symbols)
        altered = bytearray(stream)
        altered[int(rng.integers(0, len(stream)))] ^= 1 << int(rng.integers(0, 8))
        out[f"altered{k}"] = (bytes(altered).hex(), symbols)
    out["real"] = (stream.hex(), symbols)
    return out


def test_no_stream_makes_the_decoder_read_past_its_end(tmp_path):
    """Each stream ends right before a guard page (PROT_NONE): a read one byte past its end kills the
    worker with SIGSEGV, so an over-read that would not fault elsewhere fails here."""
    model = load_model("S16")
    stream, indexes, _, _ = real_stream(model, size=256)
    np.save(tmp_path / "indexes.npy", indexes.reshape(-1).numpy())
    streams = crafted_streams(stream, indexes.numel())
    run = subprocess.run([sys.executable, "-c", GUARDED, str(tmp_path / "indexes.npy")], input=json.dumps(streams),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"the decoder faulted (exit {run.returncode}): {run.stderr[-2000:]}"
    outcomes = json.loads(run.stdout)
    assert outcomes.pop("real") == 0  # the real stream, guarded too, decodes
    assert len(outcomes) == len(streams) - 1 and all(code < 0 for code in outcomes.values()), \
        {k: v for k, v in outcomes.items() if v >= 0}
    assert outcomes["state0-zeros-12582912"] == -2  # the 12 KB file that crashed CompressAI's decoder


def test_the_guard_page_catches_an_over_read(tmp_path):
    """The harness itself: a read one byte past the stream faults."""
    probe = GUARDED.split("model = ")[0] + "buffer, address = guarded(b'abcd')\nctypes.string_at(address, 5)\n"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120)
    assert run.returncode == -11, run.returncode  # SIGSEGV


def test_an_unwritable_cache_falls_back_to_a_private_temporary_folder(tmp_path):
    """KDLIB_CACHE under a file ("Not a directory") made every command fail; now the decoder is built
    in ``<tmp>/kdlib-<uid>``, a folder only its user may enter, and the codec works."""
    import subprocess
    import sys

    (tmp_path / "a_file").write_text("not a folder")
    env = {**os.environ, "KDLIB_CACHE": str(tmp_path / "a_file" / "cache"), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    script = "from kdlib import rans; print(rans.available(), rans._library()._name)"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    built, library = out.split()
    assert built == "True" and library.startswith(str(tmp_path / "tmp" / f"kdlib-{os.getuid()}") + "/")
    assert (tmp_path / "tmp" / f"kdlib-{os.getuid()}").stat().st_mode & 0o777 == 0o700
