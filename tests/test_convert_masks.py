import glob
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import convert_masks
from datasets import records, shards
from utils import cli

H, W = 12, 16


def photo(folder, stem, h=H, w=W):
    os.makedirs(folder, exist_ok=True)
    cv2.imwrite(os.path.join(folder, stem + ".jpg"),
                np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8))


def values(seed, choices):
    return np.random.default_rng(seed).choice(choices, (H, W)).astype(np.uint8)


def read(output, split="train"):
    out = {}
    for raw in tf.data.TFRecordDataset(sorted(glob.glob(shards.shard_pattern(output, split)))):
        parsed = records.parse_example(raw)
        out[parsed[records.FILENAME].numpy().decode()] = records.decode(parsed)[1].numpy()[..., 0]
    return out


def test_binary_masks_0_255_and_0_1(tmp_path):
    images, masks = tmp_path / "im", tmp_path / "m"
    photo(images, "a")
    photo(images, "b")
    os.makedirs(masks)
    a, b = values(1, [0, 255]), values(2, [0, 1])
    cv2.imwrite(str(masks / "a.png"), a)
    cv2.imwrite(str(masks / "b.png"), b)
    stats = convert_masks.convert(str(images), str(masks), str(tmp_path / "o"), progress=False)
    got = read(str(tmp_path / "o"))
    np.testing.assert_array_equal(got["a.jpg"], (a == 255).astype(np.uint8))
    np.testing.assert_array_equal(got["b.jpg"], b)
    assert stats["images"] == 2 and stats["mask_kind"] == "binary"
    photo(images, "empty")
    cv2.imwrite(str(masks / "empty.png"), np.zeros((H, W), np.uint8))
    stats = convert_masks.convert(str(images), str(masks), str(tmp_path / "o"), overwrite=True,
                                  progress=False)
    assert (stats["positive_images"], stats["negative_images"]) == (2, 1)


def test_grey_index_masks_with_classes_and_ignore(tmp_path):
    images, masks = tmp_path / "im", tmp_path / "m"
    photo(images, "a")
    os.makedirs(masks)
    v = values(3, [0, 3, 5, 8, 200])
    cv2.imwrite(str(masks / "a_mask.png"), v)
    stats = convert_masks.convert(str(images), str(masks), str(tmp_path / "o"),
                                  classes={"cat": 8, "dog": 5}, ignore=200,
                                  mask_suffix="_mask", progress=False)
    want = np.select([v == 8, v == 5, v == 200], [1, 2, 255], 0)  # in the order given
    np.testing.assert_array_equal(read(str(tmp_path / "o"))["a.jpg"], want)
    assert (stats["classes"], stats["category_ids"]) == (["cat", "dog"], [8, 5])
    assert stats["class_pixels"] == [int((want == k).sum()) for k in (0, 1, 2)]
    assert stats["foreground_pixels"] == int(np.isin(v, [5, 8]).sum())
    assert stats["ignore_pixels"] == int((v == 200).sum())


def voc(root, palette_values):
    for stem, v in palette_values.items():
        photo(root / "JPEGImages", stem)
        os.makedirs(root / "SegmentationClass", exist_ok=True)
        im = Image.fromarray(v, mode="P")
        im.putpalette([(i * 37) % 256 for i in range(768)])  # colours unlike the indices
        im.save(root / "SegmentationClass" / f"{stem}.png")
    os.makedirs(root / "ImageSets" / "Segmentation", exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text(
        "\n".join(sorted(palette_values)[:-1]) + "\n")


def test_voc_layout_palette_indices_split_list_and_void(tmp_path):
    v = {s: values(i, [0, 8, 12, 255]) for i, s in enumerate(["2007_01", "2007_02", "2007_03"])}
    voc(tmp_path / "VOC", v)
    out = str(tmp_path / "o")
    convert_masks.main(["--voc", str(tmp_path / "VOC"), "--output", out, "--no-progress"])
    got = read(out)
    assert sorted(got) == ["2007_01.jpg", "2007_02.jpg"]  # 2007_03 is not in train.txt
    for stem in ("2007_01", "2007_02"):
        want = np.where(v[stem] == 8, 1, np.where(v[stem] == 255, 255, 0))
        np.testing.assert_array_equal(got[f"{stem}.jpg"], want)


def test_bad_pairs_stop_or_are_counted_skips(tmp_path):
    images, masks = tmp_path / "im", tmp_path / "m"
    for s in ("ok", "nomask", "small", "odd"):
        photo(images, s)
    os.makedirs(masks)
    cv2.imwrite(str(masks / "ok.png"), values(1, [0, 8]))
    cv2.imwrite(str(masks / "small.png"), np.zeros((4, 4), np.uint8))
    cv2.imwrite(str(masks / "odd.png"), values(2, [0, 30]))
    args = (str(images), str(masks), str(tmp_path / "o"))
    kw = {"classes": {"cat": 8}, "num_classes": 21, "progress": False}
    with pytest.raises(cli.UserError, match="has no mask of the same stem"):
        convert_masks.convert(*args, **kw)
    stats = convert_masks.convert(*args, skip_bad_images=True, overwrite=True, **kw)
    assert stats["images"] == 1
    assert stats["skipped"] == {"missing_mask": 1, "size_mismatch": 1, "unknown_index": 1}


def test_a_binary_folder_of_index_masks_is_refused(tmp_path):
    photo(tmp_path / "im", "a")
    os.makedirs(tmp_path / "m")
    cv2.imwrite(str(tmp_path / "m" / "a.png"), values(1, [0, 3, 8]))
    with pytest.raises(cli.UserError, match="not a binary mask"):
        convert_masks.convert(str(tmp_path / "im"), str(tmp_path / "m"), str(tmp_path / "o"),
                              progress=False)


@pytest.mark.parametrize("items,words", [
    (["cat=8", "dog=5", "cat=3"], "class 'cat' is named twice in --classes"),
    (["cat=8", "kitty=8"], "--classes gives index 8 two names, 'cat' and 'kitty'"),
])
def test_a_class_named_twice_is_one_line(tmp_path, capsys, items, words):
    photo(tmp_path / "im", "a")
    os.makedirs(tmp_path / "m")
    argv = ["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "m"), "--output",
            str(tmp_path / "o"), "--classes", *items]
    assert cli.run_main(convert_masks.main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
