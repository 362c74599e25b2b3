"""CompressAI's rANS decoder replayed in Python, and streams crafted to make it read far: the bound
behind the fallback decoder's padding (:data:`kdlib.entropy.ESCAPE_BYTES`). Run as a script, it feeds
the crafted streams to CompressAI's decoder with the padding exactly at the bound, importing
``compressai.ans`` alone (no torch), for valgrind:

    PYTHONMALLOC=malloc valgrind -q .venv/bin/python tests/rans_replay.py SEED COUNT [PADDING]

(PADDING: bytes per escape; 0 is the control, whose over-reads valgrind reports.)"""
from __future__ import annotations

import numpy as np


def replay(words: list[int], cdf: list[int], n: int) -> tuple[list[int], int, int]:
    """CompressAI's ``decode_stream`` (rans_interface.cpp, rans64.h) over one CDF table, replayed in
    Python: (its values where each escape's value is defined, bytes read, escapes)."""
    low = 1 << 31
    at, x, values, escapes = 2, words[0] | words[1] << 32, [], 0

    def word() -> int:
        nonlocal at
        at += 1
        return words[at - 1] if at - 1 < len(words) else 0  # the zero padding

    def group() -> int:
        nonlocal x
        value, x = x & 15, x >> 4
        if x < low:
            x = x << 32 | word()
        return value

    for _ in range(n):
        s = next(i for i, v in enumerate(cdf) if v > x & 0xFFFF) - 1
        x = (cdf[s + 1] - cdf[s]) * (x >> 16) + (x & 0xFFFF) - cdf[s]
        if x < low:
            x = x << 32 | word()
        if s == len(cdf) - 2:  # an escape
            escapes += 1
            count = value = group()
            while value == 15:
                value = group()
                count += value
            raw = 0
            for j in range(count):
                raw |= group() << 4 * j
            s = (-(raw >> 1) - 1 if raw & 1 else (raw >> 1) + s) if count <= 7 else None  # (C's shifts: undefined)
        values.append(s)
    return values, 4 * at, escapes


def crafted_words(rng: np.random.Generator, count: int) -> list[int]:
    """Words that make long escapes: all ones (never two in a row), ones but a top group, small ones."""
    kinds = [0xFFFFFFFF, 0x7FFFFFFF, 0x0FFFFFFF, 0xFFFFFFF7, 0, 1]
    words = [int(rng.choice([0xFFFFFFFF, rng.integers(1 << 31, 1 << 32)])),  # a state in [2^31, 2^63)
             int(rng.choice([0x7FFFFFFF, 0x0FFFFFFF, rng.integers(1 << 30, 1 << 31)]))]
    while len(words) < count:
        word = kinds[rng.integers(len(kinds))] if rng.random() < 0.8 else int(rng.integers(1 << 32))
        if not (word == 0xFFFFFFFF == words[-1]):
            words.append(word)
    return words


def main(seed: int, count: int, per_escape: int) -> None:
    import importlib.util
    import sysconfig
    from pathlib import Path

    found = next(Path(sysconfig.get_paths()["purelib"], "compressai").glob("ans*.so"))
    spec = importlib.util.spec_from_file_location("compressai.ans", found)
    ans = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ans)
    rng, nearest = np.random.default_rng(seed), -1 << 30
    for case in range(count):
        cdf = [[0, 1, 65536], [0, 30000, 60000, 65536]][case % 2]
        words, n = crafted_words(rng, int(rng.integers(4, 40))), int(rng.integers(1, 5))
        _, read, escapes = replay(words, cdf, n)
        padding = 4 * n + per_escape * escapes
        decoder = ans.RansDecoder()
        decoder.set_stream(np.array(words, "<u4").tobytes() + bytes(padding))
        decoder.decode_stream([0] * n, [cdf], [len(cdf)], [0])
        nearest = max(nearest, read - 4 * len(words) - padding)
    print(f"{count} streams; the replay's nearest read to the buffer's end: {nearest} bytes (> 0: past it)")


if __name__ == "__main__":
    import sys

    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 264)
