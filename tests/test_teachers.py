import pytest
import torch

from kdlib import teachers
from kdlib.models import read_checkpoint
from kdlib.train import Config, train


def config(folder, **kw):
    return Config(**{"name": "t", "N": 8, "M": 16, "scale": "smoke", "data": str(folder), "crop": 64,
                     "steps": 6, "val_every": 3, **kw})


@pytest.fixture(autouse=True)
def disk_has_room(monkeypatch):
    """x_hat is kept only while the disk keeps ``KEEP_FREE`` free: the tests run on small disks too."""
    monkeypatch.setattr(teachers, "KEEP_FREE", 0)


@pytest.fixture
def calls(monkeypatch):
    """Counts the teacher's forward passes: ``calls["n"]``."""
    count = {"n": 0}
    real = teachers.TeacherTargets.forward

    def counted(self, x, *parts):
        count["n"] += 1
        return real(self, x, *parts)

    monkeypatch.setattr(teachers.TeacherTargets, "forward", counted)
    return count


@pytest.mark.slow  # over 10 s here: left out of `make test-fast`
def test_cached_targets_are_the_teachers_and_are_used(photo_folder, tmp_path, monkeypatch, calls):
    monkeypatch.setattr(teachers, "CHUNK", 2)
    teacher = train(config(photo_folder, name="teacher", N=16), runs=tmp_path, progress=False)
    plain = train(config(photo_folder, name="plain", teacher=str(teacher)), runs=tmp_path / "a", progress=False)
    assert calls["n"] == 6
    kw = dict(teacher=str(teacher), N=4)  # another size, same crops: shares the targets
    first = train(config(photo_folder, name="first", **kw), runs=tmp_path / "b", progress=False, teacher_cache=tmp_path / "c")
    assert calls["n"] == 12 and len(list((tmp_path / "c").rglob("*.pt"))) == 6  # y_hat and x_hat of 3 chunks
    assert len(list((tmp_path / "c").rglob("*.x.f32"))) == 3 and not list((tmp_path / "c").rglob("*.tmp"))
    again = train(config(photo_folder, name="again", **kw), runs=tmp_path / "d", progress=False, teacher_cache=tmp_path / "c")
    assert calls["n"] == 12  # every step from the cache
    for key, value in read_checkpoint(first)["state_dict"].items():
        assert torch.equal(value, read_checkpoint(again)["state_dict"][key]), key
    assert read_checkpoint(plain)["meta"]["steps"] == 6
    other_seed = train(config(photo_folder, name="seed", seed=1, **kw), runs=tmp_path / "e", progress=False,
                       teacher_cache=tmp_path / "c")
    assert calls["n"] == 18 and other_seed.exists()  # other crops: nothing shared


def test_a_batch_that_differs_from_the_cached_one_is_recomputed(tmp_path, small_model, monkeypatch):
    monkeypatch.setattr(teachers, "CHUNK", 1)
    targets = teachers.TeacherTargets(small_model)
    cache = teachers.TargetCache(tmp_path, {"k": 1}, targets, small_model.g_s)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        first = cache(0, x)
        assert cache.misses == 1 and torch.equal(cache(0, x)["y_hat"], first["y_hat"]) and cache.hits == 1
        cache(0, x + 0.01)
    assert cache.misses == 2


def test_stored_x_hat_is_the_teachers_and_replaces_g_s(tmp_path, small_model, monkeypatch):
    targets = teachers.TeacherTargets(small_model)
    x = [torch.rand(2, 3, 64, 64) for _ in range(4)]
    with torch.no_grad():
        first = teachers.TargetCache(tmp_path, {"k": 1}, targets, small_model.g_s, chunk=2)
        computed = [first(s, batch) for s, batch in enumerate(x)]
        assert first.misses == 4 and len(list(tmp_path.rglob("*.x.f32"))) == 2

        def fail(_):
            raise AssertionError("g_s called although x_hat is stored")

        again = teachers.TargetCache(tmp_path, {"k": 1}, fail, fail, chunk=2)
        for s, batch in enumerate(x):
            out = again(s, batch)
            assert torch.equal(out["y_hat"], computed[s]["y_hat"]) and torch.equal(out["x_hat"], computed[s]["x_hat"])
        assert again.hits == 4 and not again.decoded
        small = teachers.TargetCache(tmp_path / "y", {"k": 1}, targets, small_model.g_s, chunk=2, keep_x=False)
        for s, batch in enumerate(x):
            small(s, batch)
        assert not list((tmp_path / "y").rglob("*.x.*")) and len(list((tmp_path / "y").rglob("*.pt"))) == 2
        assert small.decoded == 0 and small.misses == 4
        # a damaged x_hat file is recomputed from y_hat (g_s) and replaced
        raw = next(tmp_path.glob("*/0.x.f32"))
        raw.write_bytes(raw.read_bytes()[:-4])
        third = teachers.TargetCache(tmp_path, {"k": 1}, fail, small_model.g_s, chunk=2)
        assert torch.equal(third(0, x[0])["x_hat"], computed[0]["x_hat"]) and third.decoded == 1
        third(1, x[1])
        assert raw.stat().st_size == 4 * 2 * x[0].numel() and not list(tmp_path.rglob("*.tmp"))


def test_a_full_disk_keeps_y_hat_and_decodes_x_hat(tmp_path, small_model, monkeypatch):
    monkeypatch.setattr(teachers, "KEEP_FREE", 2**62)  # more than any disk has free
    targets = teachers.TeacherTargets(small_model)
    x = [torch.rand(2, 3, 64, 64) for _ in range(2)]
    with torch.no_grad():
        full = teachers.TargetCache(tmp_path, {"k": 1}, targets, small_model.g_s, chunk=2)
        computed = [full(s, batch) for s, batch in enumerate(x)]
        assert not list(tmp_path.rglob("*.x.*")) and len(list(tmp_path.rglob("*.pt"))) == 1
        again = teachers.TargetCache(tmp_path, {"k": 1}, targets, small_model.g_s, chunk=2)
        for s, batch in enumerate(x):
            assert torch.allclose(again(s, batch)["x_hat"], computed[s]["x_hat"], atol=1e-6)
        assert again.hits == 2 and again.decoded == 2


def test_an_unfinished_chunk_leaves_no_file(tmp_path, small_model):
    cache = teachers.TargetCache(tmp_path, {"k": 1}, teachers.TeacherTargets(small_model), small_model.g_s, chunk=3)
    with torch.no_grad():
        cache(0, torch.rand(2, 3, 64, 64))
        assert len(list(tmp_path.rglob("*.tmp"))) == 1
        cache.close()
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.pt"))


@pytest.mark.slow  # over 10 s here: left out of `make test-fast`
@pytest.mark.parametrize("hybrid", [False, True])
def test_hyper_latent_targets_are_cached_too(photo_folder, tmp_path, monkeypatch, hybrid, calls):
    """Hyper-latent KD (z_hat from the teacher, or from a second teacher: hybrid) trains the same
    with the cache as without, and a second run asks no teacher for anything."""
    monkeypatch.setattr(teachers, "CHUNK", 2)
    teacher = train(config(photo_folder, name="teacher", N=16), runs=tmp_path, progress=False)
    kw = dict(teacher=str(teacher), N=4, Z=16, w_hyper=0.2)
    if hybrid:
        kw["hyper_teacher"] = str(train(config(photo_folder, name="other", N=16, seed=3), runs=tmp_path, progress=False))
    plain = train(config(photo_folder, name="plain", **kw), runs=tmp_path / "a", progress=False)
    first = train(config(photo_folder, name="first", **kw), runs=tmp_path / "b", progress=False, teacher_cache=tmp_path / "c")
    assert len(list((tmp_path / "c").rglob("*.z.pt"))) == 3
    before = calls["n"]
    again = train(config(photo_folder, name="again", **kw), runs=tmp_path / "d", progress=False, teacher_cache=tmp_path / "c")
    assert calls["n"] == before
    for key, value in read_checkpoint(plain)["state_dict"].items():
        assert torch.equal(value, read_checkpoint(first)["state_dict"][key]), key
        assert torch.equal(value, read_checkpoint(again)["state_dict"][key]), key


def test_z_hat_for_a_seed_with_stored_y_hat_and_x_hat_skips_g_s(tmp_path, small_model):
    """Hyper-latent KD after plain KD at the same seed: only ``z_hat`` is computed (no ``g_s``), it
    equals the full pass's, and it is stored beside the others."""
    x = [torch.rand(2, 3, 64, 64) for _ in range(2)]
    full = teachers.TeacherTargets(small_model, teachers.PARTS + ("z_hat",))
    with torch.no_grad():
        plain = teachers.TargetCache(tmp_path, {"k": 1}, teachers.TeacherTargets(small_model), small_model.g_s, chunk=2)
        for s, batch in enumerate(x):
            plain(s, batch)
        real_g_s, small_model.g_s = small_model.g_s, None  # calling g_s now fails
        hyper = teachers.TargetCache(tmp_path, {"k": 1}, full, real_g_s, full.parts, chunk=2)
        got = [hyper(s, batch) for s, batch in enumerate(x)]
        small_model.g_s = real_g_s
        for batch, out in zip(x, got):
            assert list(out) == list(full.parts)
            for part, value in full(batch).items():
                assert torch.equal(out[part], value), part
        assert hyper.misses == 2 and not hyper.hits and len(list(tmp_path.rglob("*.z.pt"))) == 1
        stored = teachers.TargetCache(tmp_path, {"k": 1}, None, None, full.parts, chunk=2)
        assert torch.equal(stored(1, x[1])["z_hat"], got[1]["z_hat"]) and stored.hits == 1
