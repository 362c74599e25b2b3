import json
import os
import re

import pytest

import numpy as np
import torch
from PIL import Image
from compressai.models import ScaleHyperprior

from kdlib.cli import main


def test_eval_writes_json(photo_folder, tmp_path, capsys):
    torch.manual_seed(0)
    model = ScaleHyperprior(16, 24)
    model.update()
    torch.save(model.state_dict(), tmp_path / "tiny.pth.tar")
    assert main(["eval", str(tmp_path / "tiny.pth.tar"), "--images", str(photo_folder), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert result["name"] == "tiny" and len(result["per_image"]) == 3
    assert "tiny: PSNR" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.pth.tar"), "--images", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kdlib eval: error:") and "Traceback" not in err


def test_train_smoke(photo_folder, tmp_path, capsys):
    args = ["train", "--name", "cli", "--scale", "smoke", "--N", "8", "--M", "16", "--data", str(photo_folder),
            "--runs", str(tmp_path)]
    assert main(args) == 0
    assert capsys.readouterr().out.strip().endswith("best.pth.tar")


def test_train_continue(photo_folder, tmp_path, capsys):
    base = ["train", "--name", "cli", "--scale", "smoke", "--N", "8", "--M", "16", "--data", str(photo_folder),
            "--runs", str(tmp_path), "--quiet"]
    assert main(base) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["train", "--name", "ignored", "--continue", first, "--steps", "3", "--runs", str(tmp_path), "--quiet"]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second != first and second.endswith("best.pth.tar")


def test_train_kd_preset_sets_weights_and_explicit_flags_win(monkeypatch):
    from kdlib import cli

    seen = {}
    monkeypatch.setattr("kdlib.train.train", lambda config, **kw: seen.setdefault("config", config))
    cli.main(["train", "--name", "x", "--kd", "authors", "--w-latent", "0.3", "--scale", "smoke"])
    config = seen["config"]
    assert (config.w_latent, config.w_recon, config.w_rd) == (0.3, 0.2, 0.6)


@pytest.mark.parametrize("argv", [["eval", "untrained:abc", "--images", "IMAGES"], ["eval", "zoo:abc", "--images", "IMAGES"],
                                  ["bench", "codecs", "foo"]])
def test_bad_arguments_are_one_line_usage_errors(argv, photo_folder, capsys):
    argv = [str(photo_folder) if a == "IMAGES" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()[-1]) > 10


def test_every_train_flag_has_help_and_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    options = capsys.readouterr().out.split("options:")[1]
    entries = [e for e in re.split(r"\n  (?=-)", options) if e.strip().startswith("--")]
    assert len(entries) >= 25
    for entry in entries:
        text = " ".join(entry.split())
        assert "--name" in text or "default" in text, text


def test_output_and_device_errors_are_one_line(small_model, tmp_path, capsys):
    from kdlib.models import save_checkpoint

    save_checkpoint(tmp_path / "m.pth.tar", small_model, {})
    image = tmp_path / "in.png"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(image)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = [(["compress", str(image), str(tmp_path / "nowhere" / "x.kdl"), "--model", str(tmp_path / "m.pth.tar")], "does not exist"),
             (["compress", str(image), str(tmp_path / "x.kdl"), "--model", str(tmp_path / "m.pth.tar"), "--device", "foo"], "Unknown device"),
             (["compress", str(image), str(tmp_path / "x.kdl"), "--model", str(tmp_path / "m.pth.tar"), "--device", "cuda"], "CUDA")]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["compress", str(image), str(locked / "x.kdl"), "--model", str(tmp_path / "m.pth.tar")], "ermission"))
    for argv, message in cases:
        if "cuda" in argv and torch.cuda.is_available():
            continue
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_choices_come_from_the_declarations_and_train_defaults_to_the_grids_kd_loss(monkeypatch, tmp_path):
    """--kd, --latent, --scale and the experiment numbers are read from KD_PRESETS, LATENT_LOSSES,
    kdlib.scales and EXPERIMENTS; `kdlib train --teacher T` trains the grid's KD loss (the authors'
    weights), not Config's paper-text default, unless weights are given."""
    from kdlib import cli
    from kdlib.grid import EXPERIMENTS
    from kdlib.losses import KD_PRESETS, LATENT_LOSSES
    from kdlib.scales import RECIPES, SCALES

    actions = {a.dest: a for a in cli.parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert actions["kd"].choices == list(KD_PRESETS) and actions["latent"].choices == list(LATENT_LOSSES)
    assert actions["scale"].choices == list(RECIPES)
    experiment = {a.dest: a for a in cli.parser()._subparsers._group_actions[0].choices["experiment"]._actions}
    assert experiment["number"].choices == sorted(EXPERIMENTS) and experiment["scale"].choices == list(SCALES)
    configs = []
    monkeypatch.setattr("kdlib.train.train", lambda config, **k: configs.append(config) or tmp_path / "best.pth.tar")
    base = ["train", "--name", "x", "--scale", "smoke", "--runs", str(tmp_path)]
    assert main([*base, "--teacher", "T5"]) == 0
    assert main([*base, "--teacher", "T5", "--w-rd", "0.5"]) == 0
    assert main([*base, "--teacher", "T5", "--kd", "best"]) == 0
    authors, best = KD_PRESETS["authors"], KD_PRESETS["best"]
    assert (configs[0].w_latent, configs[0].w_recon, configs[0].w_rd) == (authors["w_latent"], authors["w_recon"], authors["w_rd"])
    assert configs[1].w_rd == 0.5 and configs[1].w_latent == 0.2  # explicit weights: Config's defaults for the rest
    assert configs[2].w_rd == best["w_rd"] and configs[2].w_latent == best["w_latent"]


@pytest.mark.parametrize("command", [[], ["compress"], ["decompress"], ["experiment"], ["reproduce"], ["train"]])
def test_help_reads_cleanly_and_names_the_models(command, capsys):
    """Help for users: no reStructuredText markup, no default said twice, the model names where a model is asked."""
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "``" not in text and not re.search(r"\(default: [^)]*\) \(default:", text), text
    if command in (["compress"], ["decompress"]):
        assert "S16-long" in text and "T5" in text
    assert "commit" not in text  # what to commit is our business, not the user's


@pytest.mark.parametrize("argv", [
    ["train", "--name", "x", "--lr", "-1", "--steps", "1"], ["train", "--name", "x", "--lr", "nan", "--steps", "1"],
    ["train", "--name", "x", "--lmbda", "-1", "--steps", "1"], ["train", "--name", "x", "--w-rd", "-5", "--steps", "1"],
    ["experiment", "1", "--only", "NOPE", "--dry-run"], ["bench", "resources", "T5", "--cpu-threads", "0"],
    ["compress", "IMAGE", "OUT", "--model", "S16", "--max-memory", "inf"],
    ["compress", "IMAGE", "OUT", "--model", "S16", "--max-memory", "1e400"],
    ["compress", "IMAGE", "IMAGE", "--model", "S16", "--force"], ["decompress", "KDL", "KDL", "--force"]])
def test_what_was_accepted_silently_or_with_a_traceback_is_one_line_and_a_failure(argv, tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(image)
    kdl = tmp_path / "in.kdl"
    kdl.write_bytes(b"KDLC")
    before = {p: p.read_bytes() for p in (image, kdl)}
    swap = {"IMAGE": str(image), "KDL": str(kdl), "OUT": str(tmp_path / "out.kdl")}
    try:
        code = main([swap.get(a, a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err and "error" in err.splitlines()[-1], err  # (argparse: usage, then the line)
    assert {p: p.read_bytes() for p in (image, kdl)} == before  # an input is never written over


def test_an_interrupt_says_so_in_one_line_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    from kdlib import bitstream

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bitstream, "compress", interrupted)
    image = tmp_path / "in.png"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(image)
    assert main(["compress", str(image), str(tmp_path / "out.kdl"), "--model", "S16"]) == 130
    assert capsys.readouterr().err.strip() == "kdlib compress: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_many_files_in_one_call_give_the_same_bytes_and_keep_going_past_a_bad_one(tmp_path, capsys):
    """`kdlib compress a b c --out-dir D` and `kdlib decompress D/*.kdl --out-dir E`: one process, the same
    bytes as one at a time, a bad file reported in one line without losing the others' outputs."""
    images = []
    for i, size in enumerate([(40, 50), (64, 70)]):
        images.append(tmp_path / f"img{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(images[-1])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code = main(["compress", *map(str, images), str(bad), "--out-dir", str(tmp_path / "kdl"), "--model", "S16"])
    out, err = capsys.readouterr()
    assert code == 1 and "bad.png" in err and "Traceback" not in err and "2 of 3 files" in out and "per image" in out
    for image in images:
        assert main(["compress", str(image), str(tmp_path / "one.kdl"), "--model", "S16", "--force"]) == 0
        assert (tmp_path / "one.kdl").read_bytes() == (tmp_path / "kdl" / f"{image.stem}.kdl").read_bytes()
    kdls = sorted((tmp_path / "kdl").glob("*.kdl"))
    assert main(["decompress", *map(str, kdls), "--out-dir", str(tmp_path / "png")]) == 0
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["img0.png", "img1.png"]
    assert main(["compress", str(images[0]), str(images[1]), str(tmp_path / "x.kdl"), "--model", "S16"]) == 2


def test_headers_pillow_refuses_with_a_value_error_are_one_line(tmp_path, capsys):
    """A PPM whose maxval is out of range and an SGI of an unknown mode: Pillow raises ValueError, which
    came out as a traceback."""
    import struct

    files = {"bad_header.ppm": b"P6\n3 2\n70000\n" + bytes(36),
             "bad_mode.sgi": struct.pack(">hbbHHHH", 474, 0, 1, 3, 4, 4, 7) + bytes(500)}
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
        code = main(["compress", str(tmp_path / name), str(tmp_path / f"{name}.kdl"), "--model", "S16"])
        err = capsys.readouterr().err
        assert code == 1 and "Cannot read image" in err and name in err and "Traceback" not in err, err
        assert not (tmp_path / f"{name}.kdl").exists()


def test_the_codec_commands_load_no_trainer_dataset_dynamo_or_scipy_and_write_the_same_bytes(tmp_path):
    """`kdlib compress` / `decompress` (kdlib.lazy.defer_compressai): the modules they load, listed; the
    file is the bytes the fully imported library writes, and decodes to the same pixels. Pinned to the
    CompressAI of requirements.txt: an upgrade that moves its imports fails here, not at a user's."""
    import subprocess
    import sys

    from kdlib import bitstream

    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(image)
    script = ("import sys, types; from kdlib.cli import main; code = main(sys.argv[1:]); "
              "print(code, ' '.join(m for m, v in sys.modules.items() if type(v) is types.ModuleType))")
    loaded = {}
    for argv in (["compress", str(image), str(tmp_path / "a.kdl"), "--model", "S16"],
                 ["decompress", str(tmp_path / "a.kdl"), str(tmp_path / "a.png")]):
        out = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True).stdout
        code, modules = out.splitlines()[-1].split(" ", 1)
        assert code == "0"
        loaded[argv[0]] = set(modules.split())
    for command, modules in loaded.items():
        heavy = {m for m in modules if m.startswith(("torch_geometric", "torch._dynamo", "scipy.stats", "kdlib.train",
                                                       "kdlib.bank", "kdlib.teachers", "kdlib.losses", "kdlib.grid",
                                                       "kdlib.experiments", "compressai.datasets", "compressai.zoo.image"))}
        assert not heavy and {"compressai.ans", "kdlib.rans", "kdlib.entropy"} <= modules, (command, sorted(heavy))
    assert (tmp_path / "a.kdl").read_bytes() == bitstream.compress(image, "S16")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(bitstream.decompress(
        (tmp_path / "a.kdl").read_bytes(), "S16")))
