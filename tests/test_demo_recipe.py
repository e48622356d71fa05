"""The demo recipe's tuning splits and candidates: fixed rules, and never the held-out photos."""

import os

import convert_pets
import convert_yolo
import demo
import unet
from benchmarks import demo_recipe


def _stems(folder):
    return sorted(os.path.splitext(f)[0] for f in os.listdir(folder))


def test_scenes_tune_split_is_every_4th_train_photo_and_never_a_valid_one(tmp_path):
    out = demo_recipe.make_scenes_tune(demo.SCENES_DIR, str(tmp_path / "scenes"))
    train = _stems(os.path.join(demo.SCENES_DIR, "train", "images"))
    valid = set(_stems(os.path.join(demo.SCENES_DIR, "valid", "images")))
    export = convert_yolo.load_export(out)
    fit_dir, tune_dir = (convert_yolo.image_dir(export, s) for s in demo.SCENES_SPLITS)
    # the demo reads fit/ as the train split and tune/ as the held-out val split
    assert (os.path.basename(os.path.dirname(fit_dir)),
            os.path.basename(os.path.dirname(tune_dir))) == ("fit", "tune")
    assert _stems(tune_dir) == train[3::4] and len(train[3::4]) == 56
    assert _stems(fit_dir) == sorted(set(train) - set(train[3::4]))
    assert _stems(convert_yolo.label_dir(tune_dir)) == train[3::4]  # each photo's labels too
    assert not valid & (set(_stems(fit_dir)) | set(_stems(tune_dir)))


def test_pets_tune_split_is_qualitys_rule_and_never_a_test_photo(tmp_path):
    out = demo_recipe.make_pets_tune(demo.PETS_DIR, str(tmp_path / "pets"))
    fit, _ = convert_pets.load_split(out, "trainval")
    tune, _ = convert_pets.load_split(out, "test")
    test, _ = convert_pets.load_split(demo.PETS_DIR, "test")
    trainval, _ = convert_pets.load_split(demo.PETS_DIR, "trainval")
    assert (len(fit), len(tune)) == (150, 75)
    assert sorted(p.name for p in fit + tune) == sorted(p.name for p in trainval)
    assert not {p.name for p in test} & {p.name for p in fit + tune}
    # within each breed, sorted by number, the 3rd, 6th, ... photo is a tune photo
    abyssinians = sorted((p for p in trainval if p.name.startswith("Abyssinian_")),
                         key=lambda p: p.number)
    assert [p.name for p in tune if p.name.startswith("Abyssinian_")] == [
        p.name for p in abyssinians[2::3]]


def test_every_candidate_is_a_valid_recipe_that_validates_whole_photos():
    for recipe in demo_recipe.RECIPES:
        s = demo_recipe.settings_of(recipe)
        assert unet.is_valid_input_size(s["input_size"], s["depth"]), recipe.name
        assert unet.output_size(s["val_input_size"], s["depth"]) >= s["long_side"], recipe.name
    # the demo's recipe is the candidate the tuning chose
    chosen = demo_recipe.BY_NAME[demo_recipe.CHOSEN].settings
    assert {k: demo.SCRATCH_TRAINING[k] for k in chosen} == chosen
