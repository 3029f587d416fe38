"""Tests of the training recipes (utils/train/recipes.py), their resolution into a
run's configuration, the optimizer they make, the weights' EMA (utils/train/ema.py)
and how checkpoints and --resume carry it."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from nets.loss import YoloLoss
from nets.yolo import YoloV3
from utils.checkpoint import load_model
from utils.config import DEFAULT_ANCHORS
from utils.model_data import load_anchors
from utils.train import callbacks as cb
from utils.train.config import ConfigError, TrainConfig, validate_recipe_values
from utils.train.ema import ModelEMA, ema_decay
from utils.train.lr_schedule import cosine_lr, lr_at, scaled_lr
from utils.train.optimizer import BiasGroup, make_optimizer
from utils.train.recipes import AUTO_MAX_ITERATIONS, RECIPE_FIELDS, RECIPES, choose_recipe, nominal_iterations

SIZE = 64


# ----------------------------------------------------------------------------- recipes


def test_auto_picks_by_nominal_iterations():
    # ceil(2000 / 64) = 32 iterations per epoch: 312 epochs is the last "short" run.
    assert nominal_iterations(2000, 8, 312) == 32 * 312 <= AUTO_MAX_ITERATIONS
    recipe, reason = choose_recipe("auto", 2000, 8, 312)
    assert recipe.name == "short" and "9,984 nominal iterations" in reason
    recipe, reason = choose_recipe("auto", 2000, 8, 313)
    assert recipe.name == "long" and "10,016" in reason
    # A batch above 64 counts as itself.
    assert nominal_iterations(1000, 128, 10) == 8 * 10
    assert choose_recipe("reference", 10, 8, 1)[0] is RECIPES["reference"]
    with pytest.raises(ValueError, match="shortt"):
        choose_recipe("shortt", 10, 8, 1)


def test_reference_resolves_to_todays_defaults():
    cfg = TrainConfig(recipe="reference").resolved(num_train_images=100, num_classes=20)
    assert (cfg.optimizer, cfg.lr, cfg.min_lr, cfg.momentum) == ("sgd", 1e-2, 1e-4, 0.937)
    assert (cfg.weight_decay, cfg.freeze_epochs, cfg.lr_batch_scaling) == (5e-4, 50, True)
    assert (cfg.box_gain, cfg.obj_gain, cfg.cls_gain, cfg.loss_batch_scale) == (0.05, 5.0, 1.0, False)
    assert cfg.ema is False and cfg.warmup_epochs < 0
    assert (cfg.jitter, cfg.scale_min, cfg.scale_max, cfg.mosaic_ratio) == (0.3, 0.25, 2.0, 0.7)
    # Adam under the reference recipe: its own default rate, no L2, beta_1 0.937.
    adam = TrainConfig(recipe="reference", optimizer="adam").resolved(100, 20)
    assert (adam.lr, adam.weight_decay, adam.momentum) == (1e-3, 0.0, 0.937)


def test_reference_optimizer_and_schedule_are_unchanged():
    cfg = TrainConfig(recipe="reference").resolved(100, 20)
    optimizer = make_optimizer(cfg)
    assert type(optimizer) is keras.optimizers.SGD
    assert optimizer.momentum == pytest.approx(0.937) and optimizer.nesterov
    lr, min_lr = scaled_lr(cfg.lr, cfg.min_lr, 8, "sgd")
    assert (lr, min_lr) == pytest.approx((1.25e-3, 1.25e-5))
    for epoch in range(300):
        assert lr_at(epoch, 300, lr, min_lr, "cos", reference_warmup=True) == cosine_lr(epoch, 300, lr, min_lr)


def test_short_recipe_uses_adamw_with_class_count_lr():
    cfg = TrainConfig().resolved(num_train_images=300, num_classes=5)
    assert cfg.recipe == "short" and "nominal iterations" in cfg.recipe_reason
    assert cfg.optimizer == "adamw" and cfg.lr == pytest.approx(round(0.002 * 5 / 9, 6))
    assert cfg.ema and cfg.loss_batch_scale and cfg.min_lr == pytest.approx(cfg.lr / 100)
    assert (cfg.freeze_epochs, cfg.jitter, cfg.scale_min, cfg.scale_max) == (3, 0.1, 0.75, 1.25)
    optimizer = make_optimizer(cfg)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(5e-4) and optimizer.beta_1 == pytest.approx(0.9)


def test_every_flag_override_wins_over_the_recipe_and_reaches_config_json(tmp_path):
    overrides = {
        "optimizer": "sgd", "lr": 0.02, "min_lr": 0.001, "lr_batch_scaling": True, "momentum": 0.8,
        "weight_decay": 1e-4, "warmup_epochs": 1.0, "warmup_min_steps": 7, "warmup_bias_lr": 0.05,
        "box_gain": 0.1, "obj_gain": 2.0, "cls_gain": 3.0, "cls_norm": "mean", "loss_batch_scale": False, "ema": False,
        "ema_decay": 0.99, "ema_tau": 10.0, "freeze_epochs": 2, "jitter": 0.2, "scale_min": 0.5,
        "scale_max": 1.5, "mosaic_ratio": 0.3, "assigner": "yolov3", "anchor_t": 3.0, "obj_iou_target": False,
    }
    assert set(overrides) >= set(RECIPE_FIELDS) - {"min_lr_ratio"}
    assert all(getattr(RECIPES["short"], key) != value for key, value in overrides.items() if key in RECIPE_FIELDS)
    cfg = TrainConfig(recipe="short", **overrides).resolved(100, 5)
    for key, value in overrides.items():
        assert getattr(cfg, key) == value, key
    validate_recipe_values(cfg)
    saved = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert {k: saved[k] for k in overrides} == overrides and saved["recipe"] == "short"
    optimizer = make_optimizer(cfg, BiasGroup())
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == pytest.approx(0.8)


def test_train_py_flags_reach_the_configuration():
    import train

    argv = ["--recipe", "reference", "--optimizer", "adamw", "--cls-gain", "2.5", "--no-ema", "--warmup-epochs", "1",
            "--loss-batch-scale", "--momentum", "0.85", "--obj-gain", "0.3"]
    cfg = train.config_from_args(train.parse_args(argv))
    assert (cfg.recipe, cfg.optimizer, cfg.cls_gain, cfg.ema, cfg.warmup_epochs) == ("reference", "adamw", 2.5,
                                                                                     False, 1.0)
    assert (cfg.loss_batch_scale, cfg.momentum, cfg.obj_gain) == (True, 0.85, 0.3)
    assert train.config_from_args(train.parse_args([])).ema is None  # left to the recipe


def test_class_norm_scales_the_class_term_and_old_configs_keep_the_reference():
    from utils.train.settings import from_saved

    anchors = load_anchors(DEFAULT_ANCHORS)
    num_classes = 11
    y_true, y_pred = _one_positive_batch(num_classes, batch=2, cls=2, seed=1)
    cls = {norm: float(YoloLoss(anchors, num_classes, SIZE, cls_ratio=0.5, cls_norm=norm)(y_true, y_pred)[1]["cls"])
           for norm in ("reference", "mean", "sum")}
    assert cls["reference"] > 0
    np.testing.assert_allclose(cls["mean"], cls["reference"] * 80 / num_classes, rtol=1e-5)
    np.testing.assert_allclose(cls["sum"], cls["mean"] * num_classes, rtol=1e-5)
    with pytest.raises(ValueError, match="cls_norm"):
        YoloLoss(anchors, num_classes, SIZE, cls_norm="median")
    # Every recipe keeps the reference's; a config.json written before the setting
    # existed trained with it.
    assert {recipe.cls_norm for recipe in RECIPES.values()} == {"reference"}
    assert from_saved({"cls_gain": 0.5})["cls_norm"] == "reference"
    assert from_saved({"cls_gain": 0.5, "cls_norm": "sum"})["cls_norm"] == "sum"


def test_bias_warmup_is_refused_for_adam():
    cfg = TrainConfig(recipe="short", warmup_bias_lr=0.1).resolved(100, 5)
    with pytest.raises(ConfigError, match="SGD only"):
        validate_recipe_values(cfg)


def _one_positive_batch(num_classes, batch, cls, seed):
    """(y_true, y_pred) of a batch with one positive of class ``cls`` per level and image, random heads."""
    rng = np.random.default_rng(seed)
    y_pred = [rng.normal(0, 1, (batch, SIZE // s, SIZE // s, 3 * (5 + num_classes))).astype("float32")
              for s in (32, 16, 8)]
    y_true = []
    for s in (32, 16, 8):
        t = np.zeros((batch, SIZE // s, SIZE // s, 3, 5 + num_classes), np.float32)
        t[:, 0, 0, 0, :4] = (0.2, 0.2, 0.3, 0.3)
        t[:, 0, 0, 0, 4] = 1.0
        t[:, 0, 0, 0, 5 + cls] = 1.0
        y_true.append(t)
    y_true.append(np.tile(np.array([[[0.2, 0.2, 0.3, 0.3]]], np.float32), (batch, 1, 1)))
    return y_true, y_pred


def test_loss_gains_and_batch_scale():
    anchors = load_anchors(DEFAULT_ANCHORS)
    batch, num_classes = 3, 4
    y_true, y_pred = _one_positive_batch(num_classes, batch, cls=0, seed=0)
    _, ref = YoloLoss(anchors, num_classes, SIZE)(y_true, y_pred)
    total, parts = YoloLoss(anchors, num_classes, SIZE, box_ratio=0.1, obj_ratio=1.0, cls_ratio=0.5,
                            batch_scale=True)(y_true, y_pred)
    np.testing.assert_allclose(float(parts["box"]), float(ref["box"]) * 2 * batch, rtol=1e-5)
    np.testing.assert_allclose(float(parts["obj"]), float(ref["obj"]) / 5 * batch, rtol=1e-5)
    np.testing.assert_allclose(float(parts["cls"]), float(ref["cls"]) / 2 * batch, rtol=1e-5)
    np.testing.assert_allclose(float(total), sum(float(v) for v in parts.values()), rtol=1e-5)


# ------------------------------------------------------------------------ warm-up


class _FakeOptimizer:
    learning_rate = None


class _FakeModel:
    optimizer = _FakeOptimizer()


def test_per_step_warmup_and_bias_rate():
    group = BiasGroup()
    setter = cb.LearningRateSetter(lambda e: 0.01, warmup_steps=9, steps_per_epoch=5, warmup_bias_lr=0.1,
                                   bias_group=group)
    setter.set_model(_FakeModel())
    seen = []
    for epoch in range(3):
        setter.on_epoch_begin(epoch)
        for batch in range(5):
            setter.on_train_batch_begin(batch)
            rate = setter.model.optimizer.learning_rate
            seen.append((rate * float(group.weight_scale.numpy()), rate * float(group.bias_scale.numpy())))
    lrs, bias_lrs = np.array(seen).T
    # Weights rise linearly to 0.01 over 9 steps, biases fall from near 0.1 to 0.01.
    np.testing.assert_allclose(lrs[:9], 0.01 * np.arange(1, 10) / 10, rtol=1e-5)
    np.testing.assert_allclose(bias_lrs[:9], 0.1 + np.arange(1, 10) / 10 * (0.01 - 0.1), rtol=1e-5)
    np.testing.assert_allclose(lrs[9:], 0.01, rtol=1e-6)
    np.testing.assert_allclose(bias_lrs[9:], 0.01, rtol=1e-6)
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(bias_lrs[:10]) < 0)


def test_bias_group_scales_only_bias_gradients():
    cfg = TrainConfig(recipe="long").resolved(100, 5)
    group = BiasGroup()
    group.set_rates(0.01, 0.1, 0.1)
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    before = [v.numpy().copy() for v in (layer.kernel, layer.bias)]
    optimizer = make_optimizer(dataclasses.replace(cfg, momentum=0.0, lr=0.1), group)
    optimizer.learning_rate = 0.1
    optimizer.apply_gradients([(np.ones((3, 2), np.float32), layer.kernel), (np.ones(2, np.float32), layer.bias)])
    np.testing.assert_allclose(before[0] - layer.kernel.numpy(), 0.01, rtol=1e-5)
    np.testing.assert_allclose(before[1] - layer.bias.numpy(), 0.1, rtol=1e-5)


# ----------------------------------------------------------------------------- EMA


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    return model


def test_ema_matches_the_closed_form():
    model = _tiny_model()
    ema = ModelEMA(model, decay=0.9, tau=4.0)
    # Non-trainable BatchNorm statistics are averaged too.
    assert len(ema.tracked) == len(model.weights) == 6
    start = [v.numpy().astype(np.float64) for v in ema.tracked]
    expected = [s.copy() for s in start]
    for k in range(1, 8):
        for v in ema.tracked:
            v.assign(v.numpy() + k)  # weight after step k: start + k(k+1)/2
        ema.update()
        d = ema_decay(k, 0.9, 4.0)
        expected = [d * e + (1 - d) * (s + k * (k + 1) / 2) for e, s in zip(expected, start)]
    assert ema.updates.numpy() == 7
    for got, want in zip(ema.averaged_values(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    raw = [v.numpy().copy() for v in ema.tracked]
    with ema.swapped():
        for v, want in zip(ema.tracked, expected):
            np.testing.assert_allclose(v.numpy(), want, rtol=1e-5, atol=1e-5)
    for v, r in zip(ema.tracked, raw):
        np.testing.assert_array_equal(v.numpy(), r)
    assert ema_decay(1) == pytest.approx(0.9999 * (1 - np.exp(-1 / 2000)))


@pytest.fixture(scope="module")
def detector():
    model = YoloV3(3, class_names=["a", "b", "c"], input_size=SIZE, backbone="efficientnet-lite0")
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.optimizer.build(model.trainable_variables)
    return model


def test_checkpoints_hold_the_average_and_resume_restores_it_exactly(detector, tmp_path):
    from utils.train.phases import RunState
    from utils.train.trainer import _make_ema

    cfg = TrainConfig(ema=True, ema_decay=0.5, ema_tau=1.0)
    ema = _make_ema(cfg, detector, tmp_path, None)
    rng = np.random.default_rng(1)
    for _ in range(3):
        for v in ema.tracked:
            v.assign(v.numpy() + rng.normal(0, 0.01, v.shape).astype(v.dtype))
        ema.update()
    averaged = ema.averaged_values()
    raw = [v.numpy().copy() for v in detector.weights]
    assert any(not np.array_equal(a, r) for a, r in zip(averaged, raw))

    checkpointer = cb.RunCheckpointer(tmp_path, save_period=0, ema=ema)
    checkpointer.set_model(detector)
    checkpointer.on_epoch_end(0, {"loss": 1.0})
    # The model keeps training from its raw weights.
    for v, r in zip(detector.weights, raw):
        np.testing.assert_array_equal(v.numpy(), r)
    saved = load_model(tmp_path / "last.keras")
    for v, a in zip([w for w in saved.weights if "float" in str(w.dtype)], averaged):
        np.testing.assert_array_equal(v.numpy(), a)
    state = RunState.read(tmp_path / cb.STATE_FILE)
    assert state.ema_updates == 3 and state.epoch == 1

    # Resume: a fresh model loads last.keras, then the EMA restores raw weights and the average.
    fresh = YoloV3(3, class_names=["a", "b", "c"], input_size=SIZE, backbone="efficientnet-lite0")
    fresh.load_weights(tmp_path / "last.keras")
    restored = _make_ema(cfg, fresh, tmp_path, state)
    assert restored.updates.numpy() == 3
    for v, r in zip(fresh.weights, raw):
        np.testing.assert_array_equal(v.numpy(), r)
    for got, want in zip(restored.averaged_values(), averaged):
        np.testing.assert_array_equal(got, want)


def test_a_recipe_missing_or_adding_a_setting_is_an_error():
    from utils.train.recipes import Recipe

    values = dict(RECIPES["short"].values)
    with pytest.raises(ValueError, match=r"missing settings \['jitter'\]"):
        Recipe("broken", "no jitter", {k: v for k, v in values.items() if k != "jitter"})
    with pytest.raises(ValueError, match=r"unknown settings \['colour'\]"):
        Recipe("broken", "a colour", {**values, "colour": "red"})
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.5"):
        Recipe("broken", "momentum", {**values, "momentum": 1.5})


def test_flags_config_and_summary_come_from_the_one_declaration():
    import train
    from utils.train.phases import phase_plan
    from utils.train.settings import SETTINGS
    from utils.train.summary import format_summary

    parser_dests = set(vars(train.parse_args([])))
    declared = {s.name for s in SETTINGS if s.flag}
    assert declared <= parser_dests
    assert parser_dests - declared == {"phi", "resume", "cluster", "worker_index"}
    cfg = TrainConfig().resolved(100, 5)
    assert set(dataclasses.asdict(cfg)) == {s.name for s in SETTINGS}
    summary = format_summary(cfg, "run", 100, 10, phase_plan(cfg, True), ["a", "b"])
    for s in SETTINGS:
        if s.summary:
            assert s.summary in summary, s.name
    assert "assigner" in summary and "yolov5" in summary and "obj iou target True" in summary


def test_out_of_range_settings_name_their_flag():
    from utils.train.config import validate

    with pytest.raises(ConfigError, match=r"--epochs must be >= 1, got 0"):
        validate(TrainConfig(epochs=0))
    with pytest.raises(ConfigError, match=r"--label-smoothing must be in \[0, 1\), got 1.0"):
        validate(TrainConfig(label_smoothing=1.0))
    with pytest.raises(ConfigError, match=r"--anchor-t must be > 1, got 1.0"):
        validate_recipe_values(TrainConfig(anchor_t=1.0).resolved(100, 5))
