"""Our rANS decoder against the best coders, on the same symbols, one thread (issue 44).

The y streams of Kodak images coded with S16 and T5: each image's symbols (CDF positions) and their
tables (the scale indexes), decoded by
- ours: ``kdlib.rans`` (CompressAI's format, every read bounds-checked), from the ``.kdl`` bytes;
- CompressAI's ``RansDecoder.decode_with_indexes`` on the same bytes (unchecked; indexes and tables
  passed as the Python lists its API takes, built outside the timing);
- constriction's ANS (``AnsCoder``, a ``Categorical`` model per table, built from the same 16-bit
  CDFs): its stream is its own, and it decodes one call per table, the symbols grouped by table (the
  order a decoder that knows the indexes may choose; one call per symbol would time Python); an
  escape is coded as its table's last symbol, without the bypass bits (a few symbols per image);
- torch-ans (CPU, ``rans64`` at 16-bit precision with bypass coding, CompressAI's interface): the
  same CDF tables, its own stream.
Each decode is timed alone (best of ``--repeats``), in ns per symbol and as a ratio to ours; every
coder's output is checked against the symbols it was given. constriction and torch-ans are not kdlib
requirements: ``pip install constriction torch-ans`` first (a missing one is reported and skipped).

    python benchmarks/coders.py [--images 4] [--models S16 T5] [--repeats 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from kdlib import bitstream, data, entropy, rans
from kdlib.models import load_model


def streams(model, paths) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
    """Per image: (y stream, scale indexes, symbols as CDF positions) of its .kdl file."""
    out = []
    for path in paths:
        header, payload = bitstream.read_header(bitstream.compress(path, model))
        z, y = payload[:header.z_length], payload[header.z_length:]
        z_hat = entropy.decode_hyper(model, [z], header.z_shape)
        indexes = entropy.scale_indexes(model, z_hat)[0].reshape(-1).numpy().astype(np.int32)
        out.append((y, indexes, rans.decode(y, indexes, entropy._rans_tables(model))))
    return out


def best_seconds(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def ours(model, items, repeats):
    tables = entropy._rans_tables(model)
    runs = []
    for y, i, symbols in items:
        seconds, values = best_seconds(lambda: rans.decode(y, i, tables), repeats)
        runs.append((seconds, np.array_equal(values, symbols)))
    return runs


def compressai(model, items, repeats):
    from compressai.ans import RansDecoder

    cdfs, lengths, _, _ = entropy._tables(model)
    zeros = [0] * len(cdfs)
    runs = []
    for y, i, symbols in items:
        listed = i.tolist()
        seconds, values = best_seconds(lambda: RansDecoder().decode_with_indexes(y, listed, cdfs, lengths, zeros), repeats)
        runs.append((seconds, np.array_equal(np.asarray(values, np.int32), symbols)))
    return runs


def constriction_coder(model, items, repeats):
    import constriction

    cdfs, lengths, _, _ = entropy._tables(model)
    models = [constriction.stream.model.Categorical(np.diff(np.asarray(c[:n], np.float64)) / 65536, perfect=False)
              for c, n in zip(cdfs, lengths)]
    last = np.asarray(lengths) - 2  # a table's escape symbol: its bypass-coded value is not constriction's to code
    runs = []
    for _, indexes, symbols in items:
        symbols = np.clip(symbols, 0, last[indexes]).astype(np.int32)
        used = np.unique(indexes)
        groups = [symbols[indexes == t] for t in used]
        coder = constriction.stream.stack.AnsCoder()
        for t, group in reversed(list(zip(used, groups))):
            coder.encode_reverse(group, models[t])
        compressed = coder.get_compressed()

        def decode():
            decoder = constriction.stream.stack.AnsCoder(compressed)
            return [decoder.decode(models[t], len(g)) for t, g in zip(used, groups)]

        seconds, decoded = best_seconds(decode, repeats)
        restored = np.empty_like(symbols)
        for t, values in zip(used, decoded):
            restored[indexes == t] = values
        runs.append((seconds, np.array_equal(restored, symbols)))
    return runs


def torch_ans(model, items, repeats):
    from torch_ans.utils import TorchANSInterface

    cdfs, lengths, _, _ = entropy._tables(model)
    table = torch.zeros(len(cdfs), max(lengths), dtype=torch.int32)
    for t, (c, n) in enumerate(zip(cdfs, lengths)):
        table[t, :n] = torch.tensor(c[:n], dtype=torch.int32)
    coder = TorchANSInterface(num_parallel_states=1, device="cpu", impl="rans64", freq_precision=16, bypass_coding=True)
    coder.set_cdfs(table, torch.tensor(lengths, dtype=torch.int32), torch.zeros(len(cdfs), dtype=torch.int32))
    runs = []
    for _, indexes, symbols in items:
        i, s = torch.from_numpy(indexes), torch.from_numpy(symbols)
        encoded = coder.encode_with_indexes(s, i)
        seconds, decoded = best_seconds(lambda: coder.decode_with_indexes(encoded, i), repeats)
        runs.append((seconds, np.array_equal(decoded.reshape(-1).numpy(), symbols)))
    return runs


CODERS = {"ours (kdlib.rans)": ours, "CompressAI": compressai, "constriction ANS": constriction_coder,
          "torch-ans rans64 (CPU)": torch_ans}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="Kodak images (the first ones)")
    parser.add_argument("--models", nargs="+", default=["S16", "T5"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = data.kodak_paths()[:args.images]
    for name in args.models:
        model = load_model(name)
        items = streams(model, paths)
        count = sum(len(s) for _, _, s in items)
        print(f"{name}: {len(items)} Kodak images, {count:,} y symbols, {sum(len(y) for y, _, _ in items):,} bytes")
        base = None
        for label, coder in CODERS.items():
            try:
                runs = coder(model, items, args.repeats)
            except ImportError as err:
                print(f"  {label:24s} not installed ({err.name}): pip install constriction torch-ans")
                continue
            exact = all(ok for _, ok in runs)
            ns = sum(seconds for seconds, _ in runs) / count * 1e9
            base = base or ns
            print(f"  {label:24s} {ns:7.2f} ns/symbol  {ns / base:5.2f}x ours  symbols {'exact' if exact else 'DIFFER'}")


if __name__ == "__main__":
    main()
