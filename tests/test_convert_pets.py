import glob
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

import convert_coco
import convert_pets
import train
from core import config
from datasets import records, shards
from samples import drawn
from utils import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data", "oxford_pets_sample")
EMBEDDED = os.path.join(REPO, "samples", "oxford_pets")
HEADER = "#Image CLASS-ID SPECIES BREED ID\n#SPECIES: 1:Cat 2:Dog\n"
# name, CLASS-ID, SPECIES, BREED-ID; the split each goes to
TINY = [("Abyssinian_1", 1, 1, 1, "trainval"), ("Abyssinian_2", 1, 1, 1, "trainval"),
        ("Bengal_7", 6, 1, 2, "trainval"), ("Bengal_9", 6, 1, 2, "test"),
        ("american_bulldog_3", 2, 2, 1, "trainval"), ("american_bulldog_4", 2, 2, 1, "trainval"),
        ("beagle_5", 13, 2, 3, "trainval"), ("beagle_6", 13, 2, 3, "test")]
CATS = [t[0] for t in TINY if t[2] == 1 and t[4] == "trainval"]
DOGS = [t[0] for t in TINY if t[2] == 2 and t[4] == "trainval"]


def trimap_of(height, width, seed):
    """A pet blob (1) with a 2-px border (3) on background (2), like the dataset's trimaps."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    cy, cx, r = height // 2 + rng.integers(-3, 4), width // 2 + rng.integers(-3, 4), 8
    dist = np.sqrt((rows - cy) ** 2 + (cols - cx) ** 2)
    trimap = np.full((height, width), 2, np.uint8)
    trimap[dist < r + 2] = 3
    trimap[dist < r] = 1
    return trimap


def photo_of(height, width, seed):
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (width, height))


def make_pets(root, photos=TINY, size=(30, 40)):
    """The official layout with tiny photos; returns root as str."""
    root = str(root)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "annotations", "trimaps"))
    lines = {"trainval": [], "test": []}
    for seed, (name, class_id, species, breed_id, split) in enumerate(photos):
        cv2.imwrite(os.path.join(root, "images", f"{name}.jpg"), photo_of(*size, seed))
        cv2.imwrite(os.path.join(root, "annotations", "trimaps", f"{name}.png"),
                    trimap_of(*size, seed))
        lines[split].append(f"{name} {class_id} {species} {breed_id}\n")
    write(root, "list.txt", HEADER + "".join(lines["trainval"] + lines["test"]))
    for split, part in lines.items():
        write(root, f"{split}.txt", "".join(part))
    return root


def write(root, name, text):
    with open(os.path.join(root, "annotations", name), "w") as f:
        f.write(text)


def read_records(output, split="trainval"):
    files = sorted(glob.glob(shards.shard_pattern(output, split)))
    out = []
    for raw in tf.data.TFRecordDataset(files):
        parsed = records.parse_example(raw)
        image, mask = records.decode(parsed)
        out.append({"id": int(parsed[records.IMAGE_ID]),
                    "filename": parsed[records.FILENAME].numpy().decode(),
                    "format": parsed[records.FORMAT].numpy().decode(),
                    "bytes": parsed[records.IMAGE].numpy(),
                    "image": image.numpy(), "mask": mask.numpy()[..., 0]})
    return out


def expected_mask(pets_dir, filename, border="ignore", value=1):
    """The mapping computed independently: 1 -> value (the photo's class), 2 -> 0, 3 -> the
    border's value."""
    trimap = cv2.imread(os.path.join(pets_dir, "annotations", "trimaps",
                                     filename.replace(".jpg", ".png")), cv2.IMREAD_UNCHANGED)
    lut = np.zeros(256, np.uint8)
    lut[1], lut[3] = value, {"ignore": 255, "positive": value, "background": 0}[border]
    return lut[trimap]


def run(pets_dir, output, **kw):
    kw.setdefault("workers", 1)
    return convert_pets.convert(pets_dir, output=str(output), progress=False, **kw)


def shard_bytes(output, split="trainval"):
    out = {}
    for path in sorted(glob.glob(shards.shard_pattern(output, split))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = f.read()
    return out


def _cli(capsys, *argv):
    """Run the CLI; returns (exit code, stdout, stderr)."""
    code = cli.run_main(convert_pets.main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_pets(tmp_path_factory.mktemp("pets") / "pets")


@pytest.fixture()
def tiny_copy(tmp_path):
    """A private tiny dataset to damage."""
    return make_pets(tmp_path / "pets")


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """A clean 3-shard conversion of every species to compare other runs against."""
    out = tmp_path_factory.mktemp("ref") / "pets"
    stats = run(tiny, out, species="both", num_shards=3)
    return shard_bytes(str(out)), stats


# ---------------------------------------------------------------- real photos


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="no ../shared/data/oxford_pets_sample")
def test_shared_sample_masks_match_the_trimaps(tmp_path):
    out = str(tmp_path / "pets")
    stats = run(SHARED, out, species="both")
    recs = read_records(out)
    names = sorted(os.listdir(os.path.join(SHARED, "images")))
    assert sorted(r["filename"] for r in recs) == names and len(recs) == 300
    fg = ignore = pixels = 0
    for r in recs:
        with open(os.path.join(SHARED, "images", r["filename"]), "rb") as f:
            assert r["format"] == "jpeg" and r["bytes"] == f.read()  # genuine JPEGs travel as is
        mask = expected_mask(SHARED, r["filename"])
        np.testing.assert_array_equal(r["mask"], mask)
        fg, ignore = fg + (mask == 1).sum(), ignore + (mask == 255).sum()
        pixels += mask.size
    assert [r["id"] for r in recs] == sorted(r["id"] for r in recs)
    ids = {r["filename"]: r["id"] for r in recs}
    assert (ids["Abyssinian_100.jpg"], ids["american_bulldog_19.jpg"]) == (10100, 20019)
    assert stats["foreground_fraction"] == fg / pixels
    assert stats["ignore_fraction"] == ignore / pixels
    assert (stats["images"], stats["positive_images"], stats["instances"]) == (300, 300, 300)
    assert stats["classes"] == ["cat", "dog"] and stats["category_ids"] == [1, 2]


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="no ../shared/data/oxford_pets_sample")
@pytest.mark.parametrize("border", ["ignore", "positive", "background"])
def test_shared_sample_border_modes(tmp_path, border):
    out = str(tmp_path / "dog")
    stats = run(SHARED, out, species="dog", border=border)
    recs = read_records(out)
    assert len(recs) == 100 and all(r["filename"].startswith("american_bulldog") for r in recs)
    for r in recs:
        np.testing.assert_array_equal(r["mask"], expected_mask(SHARED, r["filename"], border))
    assert stats["crowd"] == border and stats["crowd_regions"] == 100
    assert (stats["ignore_fraction"] > 0.05) == (border == "ignore")


@pytest.mark.parametrize("split,cats,dogs", [("trainval", 150, 75), ("test", 50, 25)])
def test_embedded_sample_converts(tmp_path, split, cats, dogs):
    out = str(tmp_path / "pets")
    stats = run(EMBEDDED, out, split=split, species="both")
    recs = read_records(out, split)
    assert len(recs) == stats["images"] == cats + dogs
    assert sum(r["filename"][0].isupper() for r in recs) == cats  # capitalised names are cats
    for r in recs:
        assert max(r["image"].shape) <= 256
        np.testing.assert_array_equal(r["mask"], expected_mask(EMBEDDED, r["filename"]))


# ---------------------------------------------------------------- flags


def test_species_choose_the_foreground(tiny, tmp_path):
    for species, names in (("cat", CATS), ("dog", DOGS), ("both", sorted(CATS + DOGS))):
        out = str(tmp_path / species)
        stats = run(tiny, out, species=species)
        recs = read_records(out)
        assert sorted(r["filename"][:-4] for r in recs) == sorted(names)
        for r in recs:
            np.testing.assert_array_equal(r["mask"], expected_mask(tiny, r["filename"]))
        assert stats["positive_images"] == stats["instances"] == len(names)
        assert stats["classes"] == {"cat": ["cat"], "dog": ["dog"], "both": ["cat", "dog"]}[species]


@pytest.mark.parametrize("species", [("cat", "dog"), ("dog", "cat")])
@pytest.mark.parametrize("border", ["ignore", "positive"])
def test_two_species_are_values_1_and_2_in_the_order_given(tiny, tmp_path, species, border):
    out = str(tmp_path / "pets")
    stats = run(tiny, out, species=species, border=border)
    recs = read_records(out)
    assert sorted(r["filename"][:-4] for r in recs) == sorted(CATS + DOGS)
    value = {name: k for k, name in enumerate(species, 1)}
    for r in recs:
        kind = "cat" if r["filename"][:-4] in CATS else "dog"
        np.testing.assert_array_equal(r["mask"], expected_mask(tiny, r["filename"], border,
                                                               value[kind]))
    counts = sum(np.bincount(r["mask"].ravel(), minlength=256) for r in recs)
    assert counts[1] > 0 and counts[2] > 0
    assert stats["class_pixels"] == counts[:3].tolist()
    assert (stats["classes"], stats["category_ids"]) == (
        list(species), [convert_pets.SPECIES[n] for n in species])
    assert stats["positive_images"] == 6 and stats["negative_images"] == 0


def test_both_is_one_class_and_one_species_counts_two_values(tiny, tmp_path):
    stats = run(tiny, tmp_path / "both", species="both")
    recs = read_records(str(tmp_path / "both"))
    counts = sum(np.bincount(r["mask"].ravel(), minlength=256) for r in recs)
    assert stats["class_pixels"] == counts[:2].tolist() and counts[2] == 0
    assert stats["classes"] == ["cat", "dog"]  # K = 1: both are value 1


@pytest.mark.parametrize("argv,code,words", [
    (["--species", "cat", "cat"], 2, "class 'cat' is named twice in --species"),
    (["--species", "dog,cat,dog"], 2, "class 'dog' is named twice in --species"),
    (["--species", "both", "cat"], 2, "--species both is cats and dogs as one class"),
    (["--species", "fish"], 2, "unknown class 'fish' in --species: valid names are cat, dog, "
     "both"),
])
def test_bad_species_lists_are_one_line(tiny, capsys, tmp_path, argv, code, words):
    got, _, err = _cli(capsys, "--pets-dir", tiny, "--output", str(tmp_path / "x"), *argv)
    assert got == code and err.count("\n") == 1 and words in err


def test_ids_are_class_times_10000_plus_number_in_order(tiny, tmp_path):
    run(tiny, tmp_path / "pets", species="both")
    recs = read_records(str(tmp_path / "pets"))
    expected = sorted((t[1] * 10000 + int(t[0].rpartition("_")[2]), t[0] + ".jpg")
                      for t in TINY if t[4] == "trainval")
    assert [(r["id"], r["filename"]) for r in recs] == expected


@pytest.mark.parametrize("fraction,seed", [(1.0, 0), (0.5, 0), (0.5, 3), (10.0, 1)])
def test_negatives_are_the_other_species_with_empty_masks(tiny, tmp_path, fraction, seed):
    out = str(tmp_path / "cat")
    stats = run(tiny, out, negatives=fraction, seed=seed)
    recs = read_records(out)
    dog_ids = sorted(t[1] * 10000 + int(t[0].rpartition("_")[2]) for t in TINY
                     if t[2] == 2 and t[4] == "trainval")
    count = min(len(dog_ids), round(fraction * len(CATS)))  # drawn as convert_coco draws
    drawn = sorted(int(i) for i in np.random.default_rng(seed).choice(dog_ids, count,
                                                                       replace=False))
    negatives = [r for r in recs if not r["filename"][0].isupper()]
    assert [r["id"] for r in negatives] == drawn
    assert all(r["mask"].max() == 0 for r in negatives)
    assert (stats["positive_images"], stats["negative_images"]) == (len(CATS), count)
    assert stats["instances"] == len(CATS) and stats["negatives"] == fraction


def test_negatives_with_both_species_add_nothing(tiny, tmp_path, caplog):
    stats = run(tiny, tmp_path / "both", species="both", negatives=1.0)
    assert stats["negative_images"] == 0 and "adds nothing" in caplog.text


def test_split_test_reads_test_txt(tiny, tmp_path):
    stats = run(tiny, tmp_path / "pets", split="test", species="both")
    recs = read_records(str(tmp_path / "pets"), "test")
    assert sorted(r["filename"] for r in recs) == ["Bengal_9.jpg", "beagle_6.jpg"]
    assert stats["split"] == "test"
    assert os.path.exists(str(tmp_path / "pets") + "-test-00000-of-00001.tfrecord")


def test_num_shards_and_workers_give_identical_records(tiny, reference, tmp_path):
    ref_bytes, ref_stats = reference
    stats = run(tiny, tmp_path / "pets", species="both", num_shards=3, workers=2)
    assert shard_bytes(str(tmp_path / "pets")) == ref_bytes and stats == ref_stats
    assert len(ref_bytes) == 3 and stats["records_per_shard"] == [2, 2, 2]


def test_refuses_existing_output_unless_overwrite(tiny, reference, tmp_path):
    out = tmp_path / "pets"
    run(tiny, out, species="both", num_shards=2)
    with pytest.raises(cli.UserError, match="--overwrite"):
        run(tiny, out, species="both", num_shards=3)
    run(tiny, out, species="both", num_shards=3, overwrite=True)
    assert shard_bytes(str(out)) == reference[0]


def test_cli_summary_default_output_and_progress(tiny, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output is data/pets_<species>
    code, out, err = _cli(capsys, "--pets-dir", tiny, "--species", "both", "--workers", "1")
    assert code == 0
    stats = json.loads((tmp_path / "data" / "pets_cat_dog-trainval-stats.json").read_text())
    assert out.splitlines()[0] == (f"wrote 6 images (6 with cat/dog, 0 negatives), 6 instances, "
                                   f"{stats['crowd_regions']} border regions (--border ignore)")
    assert stats["crowd_regions"] == 6
    assert "skipped 0 images" in out and "data/pets_cat_dog-trainval-*.tfrecord" in out
    assert "6/6" in err  # the progress bar
    code, out, err = _cli(capsys, "--pets-dir", tiny, "--workers", "1", "--no-progress")
    assert code == 0 and "(3 with cat, 0 negatives)" in out and "3/3" not in err
    assert os.path.exists(tmp_path / "data" / "pets_cat-trainval-stats.json")


def test_cli_flags_reach_the_conversion(tiny, capsys, tmp_path):
    out = str(tmp_path / "x")
    code, text, _ = _cli(capsys, "--pets-dir", tiny, "--output", out, "--split", "trainval",
                         "--species", "dog", "--border", "positive", "--negatives", "0.5",
                         "--seed", "2", "--num-shards", "2", "--workers", "1", "--no-progress")
    assert code == 0 and "(--border positive)" in text
    stats = json.loads(Path(shards.stats_path(out, "trainval")).read_text())
    assert (stats["classes"], stats["crowd"], stats["negatives"], stats["seed"],
            stats["num_shards"], stats["negative_images"]) == (
        ["dog"], "positive", 0.5, 2, 2, round(0.5 * len(DOGS)))
    assert stats["ignore_pixels"] == 0


# ---------------------------------------------------------------- train.py compatibility


def test_stats_keys_match_convert_coco_and_pos_weight_auto_reads_them(tiny, tmp_path):
    coco = str(tmp_path / "coco")
    drawn.generate(coco, seed=0, num_train=2, num_val=1)
    coco_stats = convert_coco.convert(coco, "val2017", output=str(tmp_path / "coco_cat"),
                                      workers=1, progress=False)
    out = str(tmp_path / "pets")
    stats = run(tiny, out, border="positive")
    assert set(stats) == set(coco_stats)
    for key in ("classes", "category_ids", "shards", "records_per_shard"):
        assert isinstance(stats[key], list)
    cfg = config.resolve(config.Config(train_records=f"{out}-trainval-*.tfrecord",
                                      pos_weight="auto", seed=0))
    f = stats["foreground_fraction"]
    assert cfg.pos_weight == pytest.approx((1 - f) / f) and cfg.classes == ("cat",)
    assert cfg.stats == shards.stats_path(out, "trainval")


def test_train_reads_the_embedded_sample_records(tmp_path):
    out = str(tmp_path / "pets")
    run(EMBEDDED, out, split="test", species="cat")
    result = train.train(config.resolve(config.Config(
        train_records=f"{out}-test-*", val_records=f"{out}-test-*", depth=2, base_filters=4,
        input_size=92, batch_size=2, max_steps=2, epochs=1, pos_weight="auto", seed=0,
        log_every=1, run_dir=str(tmp_path / "run"))))
    assert result.step == 2 and 0.0 <= result.val.model["foreground_iou"] <= 1.0
    assert np.isfinite(result.train_loss)


# ---------------------------------------------------------------- interruptions


def test_crash_mid_shard_then_rerun_finishes_the_job(tiny, reference, tmp_path, monkeypatch):
    out = str(tmp_path / "pets")
    real, calls = records.make_example, []

    def crash_on_fourth(*args):
        calls.append(1)
        if len(calls) == 4:  # the 2nd record of shard 1
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(records, "make_example", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, out, species="both", num_shards=3)
    monkeypatch.setattr(records, "make_example", real)
    assert sorted(os.listdir(tmp_path)) == ["pets-trainval-00000-of-00003.tfrecord",
                                            "pets-trainval-progress.json"]
    with pytest.raises(cli.UserError, match="other settings"):
        run(tiny, out, species="both", num_shards=3, border="positive")
    stats = run(tiny, out, species="both", num_shards=3)
    assert shard_bytes(out) == reference[0] and stats == reference[1]
    assert not os.path.exists(shards.progress_path(out, "trainval"))


def test_sigkill_leaves_only_complete_shards_and_rerun_resumes(tiny, reference, tmp_path):
    out = str(tmp_path / "pets")
    argv = ["--pets-dir", tiny, "--output", out, "--species", "both", "--num-shards", "3",
            "--workers", "1", "--no-progress"]
    script = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "import convert_pets\nfrom datasets import records\n"
        "real, n = records.make_example, [0]\n"
        "def die(*a):\n"
        "    n[0] += 1\n"
        "    if n[0] == 5:\n"  # the 1st record of shard 2: shards 0 and 1 are done
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a)\n"
        "records.make_example = die\n"
        f"convert_pets.main({argv!r})\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -9
    assert sorted(os.listdir(tmp_path)) == [
        "pets-trainval-00000-of-00003.tfrecord", "pets-trainval-00001-of-00003.tfrecord",
        "pets-trainval-00002-of-00003.tfrecord.partial", "pets-trainval-progress.json"]
    got = shard_bytes(out)
    assert got == {k: v for k, v in reference[0].items() if k in got}
    assert cli.run_main(convert_pets.main, argv) == 0
    assert shard_bytes(out) == reference[0] and not glob.glob(out + "*.partial")


# ---------------------------------------------------------------- odd and bad files


def test_gif_and_rgba_png_named_jpg_become_rgb_png(tiny_copy, tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rgb = photo_of(30, 40, 0)[..., ::-1].copy()  # [30, 40, 3] RGB
    buf = io.BytesIO()
    pil.fromarray(rgb).save(buf, "GIF")
    gif = os.path.join(tiny_copy, "images", "Abyssinian_1.jpg")
    with open(gif, "wb") as f:
        f.write(buf.getvalue())
    alpha = np.full((30, 40, 1), 128, np.uint8)
    rgba = os.path.join(tiny_copy, "images", "Abyssinian_2.jpg")
    cv2.imwrite(rgba + ".png", np.dstack([rgb[..., ::-1], alpha]))
    os.replace(rgba + ".png", rgba)
    run(tiny_copy, tmp_path / "cat")
    recs = {r["filename"]: r for r in read_records(str(tmp_path / "cat"))}
    assert recs["Abyssinian_1.jpg"]["format"] == recs["Abyssinian_2.jpg"]["format"] == "png"
    assert recs["Bengal_7.jpg"]["format"] == "jpeg"
    gif_pixels = np.asarray(pil.open(gif).convert("RGB"))  # the GIF's own palette colours
    np.testing.assert_array_equal(recs["Abyssinian_1.jpg"]["image"], gif_pixels)
    np.testing.assert_array_equal(recs["Abyssinian_2.jpg"]["image"], rgb)  # alpha dropped
    for r in recs.values():
        np.testing.assert_array_equal(r["mask"], expected_mask(tiny_copy, r["filename"]))


def _damage(root, how):
    """Damage the tiny dataset; returns the path or name the error must mention."""
    image = os.path.join(root, "images", "Bengal_7.jpg")
    trimap = os.path.join(root, "annotations", "trimaps", "Bengal_7.png")
    if how == "missing trimap":
        os.remove(trimap)
        return trimap
    if how == "wrongly sized trimap":
        cv2.imwrite(trimap, trimap_of(31, 40, 0))
        return trimap
    if how == "trimap value 7":
        cv2.imwrite(trimap, np.full((30, 40), 7, np.uint8))
        return trimap
    if how == "rgb trimap":
        cv2.imwrite(trimap, np.full((30, 40, 3), 2, np.uint8))
        return trimap
    if how == "corrupt image":
        with open(image, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
    elif how == "missing image":
        os.remove(image)
    return image


@pytest.mark.parametrize("how,words", [
    ("missing trimap", "not found: restore it (unpack annotations.tar.gz again)"),
    ("wrongly sized trimap", "is 40x31 but its image is 40x30"),
    ("trimap value 7", "holds value 7"),
    ("rgb trimap", "not a readable 1-channel 8-bit PNG"),
    ("corrupt image", "corrupt or truncated"),
    ("missing image", "unpack images.tar.gz again"),
])
def test_bad_files_are_one_clear_line(tiny_copy, tmp_path, capsys, how, words):
    name = _damage(tiny_copy, how)
    out = str(tmp_path / "out" / "cat")
    code, _, err = _cli(capsys, "--pets-dir", tiny_copy, "--output", out, "--workers", "1",
                        "--no-progress")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
    assert words in err and name in err and "--skip-bad-images" in err
    assert not glob.glob(out + "*.tfrecord") and not glob.glob(out + "*stats.json")


@pytest.mark.parametrize("how,reason", [("missing trimap", "missing_trimap"),
                                        ("wrongly sized trimap", "size_mismatch"),
                                        ("trimap value 7", "bad_trimap"),
                                        ("corrupt image", "corrupt")])
def test_skip_bad_images_counts_and_names_them(tiny_copy, tmp_path, capsys, how, reason):
    name = _damage(tiny_copy, how)
    out = str(tmp_path / "cat")
    code, text, err = _cli(capsys, "--pets-dir", tiny_copy, "--output", out, "--workers", "1",
                           "--no-progress", "--skip-bad-images")
    assert code == 0 and f"skipped 1 images (1 {reason})" in text
    assert "warning: skipped " in err and name in err
    stats = json.loads(Path(shards.stats_path(out, "trainval")).read_text())
    assert stats["skipped"] == {reason: 1} and stats["images"] == len(CATS) - 1
    assert "Bengal_7.jpg" not in [r["filename"] for r in read_records(out)]


def test_negatives_need_no_trimap(tiny_copy, tmp_path):
    os.remove(os.path.join(tiny_copy, "annotations", "trimaps", "beagle_5.png"))
    stats = run(tiny_copy, tmp_path / "cat", negatives=10.0)
    assert stats["negative_images"] == len(DOGS) and stats["skipped"] == {}


@pytest.mark.parametrize("line,words", [
    ("Bengal_7 6 1", "should be 'Image CLASS-ID SPECIES BREED-ID'"),
    ("Bengal_7 6 one 2", "whole numbers"),
    ("Bengal 6 1 2", "BREED_NUMBER"),
    ("Bengal_7 6 3 2", "unknown species 3 for Bengal_7"),
])
def test_malformed_list_lines_name_the_line(tiny_copy, tmp_path, capsys, line, words):
    path = os.path.join(tiny_copy, "annotations", "list.txt")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("Bengal_7 6 1 2", line))
    code, _, err = _cli(capsys, "--pets-dir", tiny_copy, "--output", str(tmp_path / "x"),
                        "--no-progress")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
    assert words in err and f"line 5 of {path}" in err  # 2 header comments, 2 photos before


@pytest.mark.parametrize("how,words", [
    ("no list.txt", "list.txt not found: unpack annotations.tar.gz into"),
    ("no split file", "trainval.txt not found: unpack annotations.tar.gz into"),
    ("no dataset dir", "does not exist: pass --pets-dir"),
    ("no images dir", "image folder"),
    ("split line not in list", "Bengal_8 of"),
    ("split line disagrees", "disagrees with list.txt"),
    ("repeated line", "repeats line"),
    ("binary list", "not a text file"),
    ("no cats", "no photo of trainval is a cat"),
])
def test_bad_annotation_files_are_one_clear_line(tiny_copy, tmp_path, capsys, how, words):
    pets = tiny_copy
    annotations = os.path.join(tiny_copy, "annotations")
    if how == "no list.txt":
        os.remove(os.path.join(annotations, "list.txt"))
    elif how == "no split file":
        os.remove(os.path.join(annotations, "trainval.txt"))
    elif how == "no dataset dir":
        pets = str(tmp_path / "nowhere")
    elif how == "no images dir":
        os.rename(os.path.join(tiny_copy, "images"), os.path.join(tiny_copy, "imgs"))
    elif how == "split line not in list":
        write(tiny_copy, "trainval.txt", "Bengal_8 6 1 2\n")
    elif how == "split line disagrees":
        write(tiny_copy, "trainval.txt", "Bengal_7 6 1 3\n")
    elif how == "repeated line":
        write(tiny_copy, "trainval.txt", "Bengal_7 6 1 2\nBengal_7 6 1 2\n")
    elif how == "binary list":
        with open(os.path.join(annotations, "list.txt"), "wb") as f:
            f.write(b"\xff\xfe\x00garbage")
    elif how == "no cats":
        write(tiny_copy, "trainval.txt", "beagle_5 13 2 3\n")
    code, _, err = _cli(capsys, "--pets-dir", pets, "--output", str(tmp_path / "out" / "x"),
                        "--no-progress")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and words in err
    assert not glob.glob(str(tmp_path / "out" / "*"))


@pytest.mark.parametrize("argv,words", [
    (["--species", "fish"], "--species"),
    (["--border", "maybe"], "--border"),
    (["--split", "val"], "--split"),
    (["--negatives", "-1"], "--negatives"),
    (["--num-shards", "0"], "--num-shards"),
    (["--workers", "0"], "--workers"),
    (["--seed", "-2"], "--seed"),
    ([], "--pets-dir"),
])
def test_bad_flags_exit_2(tiny, capsys, argv, words):
    if argv:
        argv = argv + ["--pets-dir", tiny]
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err


def test_bad_arguments_of_convert_are_usage_errors(tiny, tmp_path):
    with pytest.raises(cli.UsageError, match="unknown class 'fish' in --species"):
        run(tiny, tmp_path / "x", species="fish")
    with pytest.raises(cli.UsageError, match="border policy"):
        run(tiny, tmp_path / "x", border="maybe")
    with pytest.raises(cli.UsageError, match="negatives >= 0"):
        run(tiny, tmp_path / "x", negatives=-1)


def test_trimap_to_mask_mapping():
    trimap = np.array([[1, 2, 3], [3, 2, 1]], np.uint8)
    assert convert_pets.trimap_to_mask(trimap).tolist() == [[1, 0, 255], [255, 0, 1]]
    assert convert_pets.trimap_to_mask(trimap, "positive").tolist() == [[1, 0, 1], [1, 0, 1]]
    assert convert_pets.trimap_to_mask(trimap, "background").tolist() == [[1, 0, 0], [0, 0, 1]]
