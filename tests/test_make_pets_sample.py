import filecmp
import os

import cv2
import numpy as np
import pytest

import convert_pets
from samples import make_pets_sample as maker
from utils import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "samples", "oxford_pets")
SHARED = os.path.join(REPO, "..", "shared", "data", "oxford_pets_sample")
MAX_BYTES = 10 * 2**20
HEADER = "#Image CLASS-ID SPECIES BREED ID\n#SPECIES: 1:Cat 2:Dog\n"


def photo(name, class_id=1, species=1, breed_id=1):
    return convert_pets.Photo(name, class_id, species, breed_id,
                              int(name.rpartition("_")[2]))


def listed(name):
    photos, _ = convert_pets.read_list(os.path.join(SAMPLE, "annotations", name), "")
    return photos


def make_source(root, breeds, size=(300, 400)):
    """An official-layout folder: breeds = {breed: (class id, species, [numbers])}."""
    root = str(root)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "annotations", "trimaps"))
    rng = np.random.default_rng(0)
    lines = []
    for name, (class_id, species, numbers) in breeds.items():
        for n in numbers:
            image = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), size[::-1])
            trimap = rng.integers(1, 4, (size[0] // 10, size[1] // 10), dtype=np.uint8)
            trimap = cv2.resize(trimap, size[::-1], interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(os.path.join(root, "images", f"{name}_{n}.jpg"), image)
            cv2.imwrite(os.path.join(root, "annotations", "trimaps", f"{name}_{n}.png"), trimap)
            lines.append(f"{name}_{n} {class_id} {species} 1\n")
    for name, text in (("list.txt", HEADER + "".join(lines)), ("trainval.txt", "".join(lines)),
                       ("README", "the dataset's README\n")):
        with open(os.path.join(root, "annotations", name), "w") as f:
            f.write(text)
    return root


# ---------------------------------------------------------------- the rule


def test_split_rule_holds_out_every_fourth_photo_of_each_breed_by_number():
    numbers = [12, 3, 100, 7, 1, 45, 9, 30, 2]  # sorted: 1 2 3 7 9 12 30 45 100
    photos = [photo(f"Bengal_{n}") for n in numbers] + [photo(f"pug_{n}", 30, 2, 10)
                                                         for n in (5, 4, 3, 2)]
    trainval, test = maker.split_rule(photos)
    assert [p.name for p in test] == ["Bengal_7", "Bengal_45", "pug_5"]
    assert sorted(p.name for p in trainval + test) == sorted(p.name for p in photos)


def test_downscale_longer_side_and_nearest_trimap():
    image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    trimap = np.tile(np.array([1, 2, 3], np.uint8), (375, 167))[:, :500]
    small, small_trimap = maker.downscale(image, trimap)
    assert small.shape == (192, 256, 3) and small_trimap.shape == (192, 256)
    assert set(np.unique(small_trimap)) == {1, 2, 3}  # no blended values
    tall = maker.downscale(image.transpose(1, 0, 2), trimap.T)[0]
    assert tall.shape == (256, 192, 3)
    tiny = image[:200, :180]
    assert maker.downscale(tiny, trimap[:200, :180])[0] is tiny  # never upscaled


# ---------------------------------------------------------------- the committed sample


def test_committed_sample_is_small_and_split_by_the_rule():
    total = sum(os.path.getsize(os.path.join(root, f))
                for root, _, files in os.walk(SAMPLE) for f in files)
    assert total <= MAX_BYTES
    photos, trainval, test = listed("list.txt"), listed("trainval.txt"), listed("test.txt")
    assert len(photos) == 300 and (len(trainval), len(test)) == (225, 75)
    assert sum(p.species == 1 for p in test) == 50 and sum(p.species == 2 for p in test) == 25
    rule = maker.split_rule(photos)
    assert ({p.name for p in trainval}, {p.name for p in test}) == tuple(
        {p.name for p in part} for part in rule)
    assert {maker.breed(p) for p in photos} == set(maker.BREEDS)
    with open(os.path.join(SAMPLE, "annotations", "list.txt")) as f:
        assert f.readline() == "#Image CLASS-ID SPECIES BREED ID\n"  # the official header
    assert os.path.exists(os.path.join(SAMPLE, "annotations", "README"))
    assert os.path.exists(os.path.join(SAMPLE, "README.md"))


def test_committed_sample_photos_and_trimaps_agree():
    for p in listed("list.txt"):
        image = cv2.imread(os.path.join(SAMPLE, "images", f"{p.name}.jpg"), cv2.IMREAD_UNCHANGED)
        trimap = cv2.imread(os.path.join(SAMPLE, "annotations", "trimaps", f"{p.name}.png"),
                            cv2.IMREAD_UNCHANGED)
        assert image.ndim == 3 and max(image.shape[:2]) <= maker.LONGEST
        assert trimap.shape == image.shape[:2] and set(np.unique(trimap)) <= {1, 2, 3}


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="no ../shared/data/oxford_pets_sample")
def test_the_maker_recreates_the_committed_sample(tmp_path):
    made = maker.make_sample(SHARED, str(tmp_path))
    assert (made.trainval, made.test) == (225, 75) and made.bytes <= MAX_BYTES
    for folder in ("images", "annotations", os.path.join("annotations", "trimaps")):
        ours, committed = os.path.join(tmp_path, folder), os.path.join(SAMPLE, folder)
        names = sorted(f for f in os.listdir(committed)
                       if os.path.isfile(os.path.join(committed, f)))
        assert sorted(f for f in os.listdir(ours) if os.path.isfile(os.path.join(ours, f))) \
            == names
        assert filecmp.cmpfiles(ours, committed, names, shallow=False)[0] == names


# ---------------------------------------------------------------- the maker


def test_make_sample_on_a_tiny_source(tmp_path):
    source = make_source(tmp_path / "src", {"Abyssinian": (1, 1, range(1, 9)),
                                            "american_bulldog": (2, 2, (5, 6, 7, 8)),
                                            "pug": (30, 2, (1, 2))})
    out = str(tmp_path / "sample")
    made = maker.make_sample(source, out)
    assert (made.trainval, made.test) == (9, 3)  # pug is not one of BREEDS
    test = convert_pets.read_list(os.path.join(out, "annotations", "test.txt"), "")[0]
    assert [p.name for p in test] == ["Abyssinian_4", "Abyssinian_8", "american_bulldog_8"]
    image = cv2.imread(os.path.join(out, "images", "Abyssinian_1.jpg"))
    assert image.shape == (192, 256, 3)
    with open(os.path.join(out, "annotations", "list.txt")) as f:
        text = f.read()
    assert text.startswith(HEADER) and "pug" not in text and text.count("\n") == 2 + 12
    with open(os.path.join(out, "annotations", "README")) as f:
        assert f.read() == "the dataset's README\n"
    with pytest.raises(cli.UserError, match="--overwrite"):
        maker.make_sample(source, out)
    (tmp_path / "sample" / "README.md").write_text("kept")
    maker.make_sample(source, out, overwrite=True)
    assert (tmp_path / "sample" / "README.md").read_text() == "kept"
    stats = convert_pets.convert(out, "test", "both", str(tmp_path / "pets"), workers=1,
                                 progress=False)
    assert stats["images"] == 3


def test_cli_prints_the_counts_and_refuses_a_bad_source(tmp_path, capsys):
    source = make_source(tmp_path / "src", {"Bengal": (6, 1, range(1, 5))}, size=(40, 30))
    out = str(tmp_path / "sample")
    assert cli.run_main(maker.main, ["--source", source, "--output", out, "--longest", "20",
                                     "--quality", "80"]) == 0
    assert "wrote 4 photos (3 trainval, 1 test)" in capsys.readouterr().out
    assert cv2.imread(os.path.join(out, "images", "Bengal_1.jpg")).shape == (20, 15, 3)
    assert cli.run_main(maker.main, ["--source", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nowhere" in err
