"""Check that .kdl round trips of Kodak are bit-identical across processes, thread counts and batching.

    python benchmarks/check_determinism.py MODEL [MODEL ...]     (a name, a path, or untrained:N)

For each model: compress the 24 images in two fresh processes (1 and 2 threads) and compare
the files; decode them in two more (1 and 2 threads), one image at a time, and once in a
batch here; compare the decoded pixels (sha256 of each image).
"""
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def worker(mode: str, model: str, folder: str, threads: int) -> None:
    """Runs in a fresh process: compress Kodak into ``folder`` or decode it, print digests as JSON."""
    torch.set_num_threads(threads)
    from kdlib import bitstream
    from kdlib.data import kodak_paths
    from kdlib.models import from_spec

    codec = from_spec(model)
    digests = {}
    for path in kodak_paths():
        target = Path(folder) / f"{path.stem}.kdl"
        if mode == "compress":
            target.write_bytes(bitstream.compress(path, codec))
            digests[path.stem] = hashlib.sha256(target.read_bytes()).hexdigest()
        else:
            digests[path.stem] = hashlib.sha256(bitstream.decompress(target.read_bytes(), codec).tobytes()).hexdigest()
    print(json.dumps(digests))


def run(mode: str, model: str, folder: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", mode, model, str(folder), str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(models: list[str]) -> int:
    from kdlib import bitstream
    from kdlib.models import from_spec

    failures = 0
    for model in models:
        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp, "a"), Path(tmp, "b")
            a.mkdir(), b.mkdir()
            files_1, files_2 = run("compress", model, a, 1), run("compress", model, b, 2)
            decoded_1, decoded_2 = run("decompress", model, a, 1), run("decompress", model, a, 2)
            names = sorted(files_1)
            batch = bitstream.decompress_batch([(a / f"{n}.kdl").read_bytes() for n in names], from_spec(model))
            decoded_batch = {n: hashlib.sha256(image.tobytes()).hexdigest() for n, image in zip(names, batch)}
        same_files = sum(files_1[n] == files_2[n] for n in names)
        same_decoded = sum(decoded_1[n] == decoded_2[n] == decoded_batch[n] for n in names)
        if same_decoded != len(names):
            print(f"  processes 1 vs 2 threads: {sum(decoded_1[n] == decoded_2[n] for n in names)}/{len(names)} equal; "
                  f"process 1 thread vs batch: {sum(decoded_1[n] == decoded_batch[n] for n in names)}/{len(names)}")
        print(f"{model}: files identical at 1 and 2 threads: {same_files}/{len(names)}; decoded images identical "
              f"(process 1 thread, process 2 threads, batch of {len(names)} here): {same_decoded}/{len(names)}")
        failures += (same_files != len(names)) + (same_decoded != len(names))
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit(main(sys.argv[1:]))
