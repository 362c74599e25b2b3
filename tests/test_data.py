import numpy as np
import pytest
import torch
from PIL import Image

from kdlib import data
from conftest import write_png


def test_kodak_verified_from_mirror(mirror):
    paths = data.kodak_paths()
    assert [p.name for p in paths] == [f"kodim{i:02d}.png" for i in range(1, 25)]


def test_tampered_and_missing_kodak_rejected(mirror):
    with open(mirror / "kodak" / "kodim07.png", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    (mirror / "kodak" / "kodim11.png").unlink()
    with pytest.raises(data.DataError) as err:
        data.kodak_paths()
    message = str(err.value)
    assert "kodim07.png: sha256 mismatch" in message
    assert "kodim11.png: missing" in message
    assert data.DATA_ENV in message  # says how to provide the files


def test_download_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(data, "download", lambda url, dest: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(data.DataError, match="download from https://r0k.us.*failed \\(offline\\)"):
        data.kodak_paths()
    assert not list(tmp_path.rglob("*.png"))  # nothing partial left behind


def test_image_modes(tmp_path):
    gray = write_png(tmp_path / "gray.png", np.full((10, 12), 100, np.uint8))
    x = data.load_image(gray)
    assert x.shape == (3, 10, 12) and torch.allclose(x, torch.full_like(x, 100 / 255))

    sixteen = write_png(tmp_path / "sixteen.png", np.full((10, 12), 257 * 200, np.uint16))
    assert Image.open(sixteen).mode == "I;16"
    assert torch.allclose(data.load_image(sixteen), torch.full((3, 10, 12), 200 / 255))

    rgba = np.full((10, 12, 4), 255, np.uint8)
    assert data.load_image(write_png(tmp_path / "opaque.png", rgba)).shape == (3, 10, 12)
    rgba[0, 0, 3] = 10
    with pytest.raises(data.DataError, match="transparent"):
        data.load_image(write_png(tmp_path / "alpha.png", rgba))

    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(data.DataError, match="Cannot read image"):
        data.load_image(tmp_path / "broken.png")


def test_pad_and_crop_roundtrip():
    x = torch.rand(1, 3, 77, 100)
    padded, unpadding = data.pad(x)
    assert padded.shape[-2:] == (128, 128)
    assert torch.equal(data.crop(padded, unpadding), x)


def test_split_is_fixed_and_disjoint(photo_folder):
    for i in range(20):
        write_png(photo_folder / f"extra{i:02d}.png", np.zeros((8, 8, 3), np.uint8))
    files = data.image_files(photo_folder)
    train, val = data.split(files, "train"), data.split(files, "val")
    assert len(val) == len(files) // data.VAL_EVERY
    assert not set(train) & set(val) and len(train) + len(val) == len(files)
    assert val == data.split(data.image_files(photo_folder), "val")


def test_crops(photo_folder):
    files = data.image_files(photo_folder)
    train = data.ImageCrops(files, 96, train=True)
    assert train[0].shape == (3, 96, 96)  # 77x100 is reflect-padded up to the crop
    val = data.ImageCrops(files, 32, train=False)
    assert torch.equal(val[2], val[2])
    with pytest.raises(data.DataError):
        data.image_files(photo_folder / "missing")


def png16(path, samples: np.ndarray, filters=(0, 1, 2, 3, 4), color=None):
    """Write a 16-bit PNG by hand (Pillow cannot), each row with the next filter type; ``color``: the
    PNG colour type (default: RGB or RGBA by the channel count)."""
    import zlib

    h, w, c = samples.shape
    bpp, rows, prev = 2 * c, [], np.zeros(2 * c * w, np.int64)
    shift = lambda v: np.concatenate([np.zeros(bpp, np.int64), v[:-bpp]])  # noqa: E731  the pixel to the left
    for y in range(h):
        raw = np.frombuffer(samples[y].astype(">u2").tobytes(), np.uint8).astype(np.int64)
        kind = filters[y % len(filters)]
        left, corner = shift(raw), shift(prev)
        p = left + prev - corner
        paeth = np.where((abs(p - left) <= abs(p - prev)) & (abs(p - left) <= abs(p - corner)), left,
                         np.where(abs(p - prev) <= abs(p - corner), prev, corner))
        guess = [0, left, prev, (left + prev) >> 1, paeth][kind]
        rows.append(bytes([kind]) + ((raw - guess) & 255).astype(np.uint8).tobytes())
        prev = raw

    color = color if color is not None else (2 if c == 3 else 6)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr(w, h, color) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                     + chunk(b"IEND", b""))
    return path


def test_16_bit_rgb_is_rounded_not_truncated(tmp_path):
    from kdlib.data import DataError, load_image

    rng = np.random.default_rng(0)
    samples = rng.integers(0, 65536, (10, 7, 3)).astype(np.uint16)
    samples[0, 0] = 25855  # Pillow alone gives 100 (its high byte); rounded: 101
    x = load_image(png16(tmp_path / "rgb16.png", samples))
    expected = np.round(samples / 257.0).transpose(2, 0, 1) / 255
    assert np.allclose(x.numpy(), expected, atol=1e-6) and round(x[0, 0, 0].item() * 255) == 101
    alpha = np.concatenate([samples, np.full((10, 7, 1), 65535, np.uint16)], axis=2)
    assert torch.equal(load_image(png16(tmp_path / "rgba16.png", alpha)), x)  # opaque alpha dropped
    alpha[3, 3, 3] = 0
    with pytest.raises(DataError, match="transparent"):
        load_image(png16(tmp_path / "transparent16.png", alpha))


def test_16_bit_gray_with_opaque_alpha_is_read(tmp_path):
    from kdlib.data import load_image

    rng = np.random.default_rng(1)
    gray = rng.integers(0, 65536, (9, 6, 1)).astype(np.uint16)
    path = png16(tmp_path / "la16.png", np.concatenate([gray, np.full_like(gray, 65535)], axis=2), color=4)
    x = load_image(path)
    assert x.shape == (3, 9, 6) and np.allclose(x[1].numpy(), np.round(gray[..., 0] / 257.0) / 255, atol=1e-6)


def test_a_used_trns_colour_is_refused_and_an_unused_one_ignored(tmp_path):
    from PIL import Image

    from kdlib.data import DataError, load_image

    image = Image.new("RGB", (4, 4), (10, 20, 30))
    image.putpixel((0, 0), (1, 2, 3))
    image.save(tmp_path / "used.png", transparency=(10, 20, 30))
    with pytest.raises(DataError, match="tRNS colour is used"):
        load_image(tmp_path / "used.png")
    image.save(tmp_path / "unused.png", transparency=(200, 200, 200))
    assert load_image(tmp_path / "unused.png").shape == (3, 4, 4)


def chunk(kind: bytes, body: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def ihdr(width: int, height: int, color: int = 2) -> bytes:
    import struct

    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, color, 0, 0, 0))


def test_a_16_bit_trns_colour_is_honoured_for_rgb_and_gray(tmp_path):
    import struct

    from kdlib.data import DataError, load_image

    rgb = np.full((4, 5, 3), 1000, np.uint16)
    rgb[0, 0] = (7, 8, 9)
    gray = rgb[..., :1].copy()
    for name, samples, key in [("rgb", rgb, (7, 8, 9)), ("gray", gray, (7,))]:
        path = png16(tmp_path / f"{name}.png", samples, color=0 if name == "gray" else 2)
        blob = path.read_bytes()
        trns = chunk(b"tRNS", struct.pack(f">{len(key)}H", *key))
        path.write_bytes(blob[:33] + trns + blob[33:])  # after the IHDR
        with pytest.raises(DataError, match="transparent"):
            load_image(path)
        path.write_bytes(blob[:33] + chunk(b"tRNS", struct.pack(f">{len(key)}H", *([123] * len(key)))) + blob[33:])
        assert load_image(path).shape == (3, 4, 5)  # a tRNS colour no pixel has is harmless


def test_a_png_is_refused_on_its_chunks_before_any_pixel_is_inflated(tmp_path):
    """Two IHDRs (the size check and the decoder would read different ones), a chunk whose length runs
    past the file, and no IEND are each refused in one line."""
    from kdlib.data import DataError, image_size, load_image

    blob = png16(tmp_path / "ok.png", np.zeros((4, 4, 3), np.uint16)).read_bytes()
    cases = {"two_headers": blob[:33] + ihdr(5000, 5000) + blob[33:],
             "lying_length": blob[:33] + (1 << 30).to_bytes(4, "big") + blob[37:],
             "no_iend": blob[:-12]}
    for name, bad in cases.items():
        (tmp_path / f"{name}.png").write_bytes(bad)
        for read in (load_image, image_size):
            with pytest.raises(DataError, match="IHDR|truncated"):
                read(tmp_path / f"{name}.png")


def test_a_16_bit_zlib_bomb_inflates_only_to_its_headers_size(tmp_path):
    """64x64 pixels announced, 512 MB of zeros deflated into 0.5 MB: read with no more memory than the
    header's image (the hand-written reader inflated it all, 5.8 GB for the audit's file)."""
    import subprocess
    import sys
    import zlib

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr(64, 64) + chunk(b"IDAT", zlib.compress(bytes(512 << 20), 9))
                     + chunk(b"IEND", b""))
    script = ("import resource, sys; from kdlib.data import load_image; "
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; x = load_image(sys.argv[1]); "
              "print(x.shape[1:], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10)")
    shape, grown_mb = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True,
                                     check=True).stdout.rsplit(" ", 1)
    assert shape == "torch.Size([64, 64])" and int(grown_mb) < 64
