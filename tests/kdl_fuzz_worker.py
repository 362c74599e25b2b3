"""Decode every .kdl file of a folder in this process, as the fuzz test in test_bitstream.py asks:
one JSON line per file (outcome, seconds), then this process's peak memory. A crash kills this
process, not pytest; a hang runs into the test's timeout."""
import json
import resource
import sys
import time
from pathlib import Path

import torch

from kdlib.bitstream import BitstreamError, decompress
from kdlib.models import load_model

torch.set_num_threads(1)
model_path, files = sys.argv[1], sorted(Path(sys.argv[2]).glob("*.kdl"))
model = load_model(model_path) if model_path != "-" else None
print(json.dumps({"base_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
for path in files:
    blob, start = path.read_bytes(), time.perf_counter()
    try:
        image = decompress(blob, model, max_pixels=1 << 21)
        again = decompress(blob, model, max_pixels=1 << 21)
        outcome = "decoded" if image.tobytes() == again.tobytes() else "nondeterministic"
    except BitstreamError as err:
        outcome = f"error: {err}"
    print(json.dumps({"file": path.name, "outcome": outcome, "s": time.perf_counter() - start}), flush=True)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
