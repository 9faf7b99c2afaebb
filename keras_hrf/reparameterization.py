"""Merge every re-parameterizable layer of a model, at any depth.

The protocol (what the walker relies on, and all it relies on):

* A layer is *re-parameterizable* when it has a `reparameterize()` method that
  returns a new, built layer computing the same function in inference mode,
  with its training-time structure merged away, and leaves itself unchanged.
  `HRFDense` is one; so is any composite block that contains HRF layers.
* A composite block (a layer whose constructor decides which of its sublayers
  are HRF) implements `reparameterize()` in one line with
  `reparameterized_copy(self, **config_overrides)`, for example
  `return reparameterized_copy(self, hrf_expansion=None)`.

The walker (`reparameterize(model)`) knows no block by name: it copies the
model and asks each layer that has `reparameterize()` to merge itself.
"""

import inspect

import keras
import numpy as np

__all__ = ["reparameterize", "reparameterized_copy", "is_reparameterizable"]


def is_reparameterizable(layer):
    """Whether `layer` follows the protocol (has a callable `reparameterize`)."""
    return callable(getattr(layer, "reparameterize", None))


def reparameterize(model):
    """Return a new model in which every re-parameterizable layer is merged.

    Works on Functional and Sequential models, models nested in models, and
    composite layers that follow the protocol of this module, at any depth.
    The original model is left untouched (it shares no variables with the
    result and can go on training). A model without HRF layers comes back as
    an equivalent copy, so calling this twice is harmless. The returned model
    is not compiled.

    Args:
        model: A built `keras.Model`.

    Returns:
        A built `keras.Model` computing, in inference mode, the same function.

    Raises:
        TypeError: `model` is not a `keras.Model`, or a layer inside it holds
            HRF layers but does not implement `reparameterize()`.
        ValueError: `model` is not built.
    """
    if not isinstance(model, keras.Model):
        hint = (
            " For a single layer, call its own `reparameterize()` method."
            if isinstance(model, keras.layers.Layer)
            else ""
        )
        raise TypeError(
            "`reparameterize()` expects a `keras.Model`. Received: "
            f"model={model!r} (of type {type(model).__name__}).{hint}"
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built, so it has no weights to merge. "
            "Build it first (give it an `Input`, call it on data, or call "
            "`model.build(input_shape)`). Received: an unbuilt model"
        )
    if is_reparameterizable(model):
        # A model class may know how to rebuild itself merged (keeping its
        # own class and config), as the architectures of this package do.
        return model.reparameterize()
    if _is_graph_model(model):
        return _reparameterize_graph(model)
    _refuse_unmergeable(model)
    return reparameterized_copy(model)


def reparameterized_copy(layer, **config_overrides):
    """Build a merged copy of a composite layer or subclassed model.

    The copy is made from `layer.get_config()` updated with
    `config_overrides` (typically the switch that turns HRF off), built from
    `layer.get_build_config()` as `.keras` loading would, and then each of its
    variables receives the weights of the original: a sublayer that the
    overrides turned from an HRF layer into a plain one receives the merged
    weights of the original's `reparameterize()`; every other sublayer gets a
    copy of its weights.

    Args:
        layer: A built layer (or subclassed model) whose sublayers are created
            in the same order whatever the overrides.
        **config_overrides: Constructor arguments to change in the copy.

    Returns:
        A new, built instance of `type(layer)`.
    """
    if not layer.built:
        raise ValueError(
            f"Layer '{layer.name}' is not built, so it has no weights to merge."
        )
    config = layer.get_config()
    unknown = sorted(set(config_overrides) - set(config))
    if unknown:
        raise ValueError(
            f"Cannot override {unknown} for layer '{layer.name}' of type "
            f"{type(layer).__name__}: its config has no such key. "
            f"Config keys: {sorted(config)}"
        )
    config.update(config_overrides)
    copy = type(layer).from_config(config)
    build_config = layer.get_build_config()
    if build_config:
        copy.build_from_config(build_config)
    _transfer_weights(layer, copy)
    # Every variable now exists and holds the original's (merged) values. A
    # subclassed model built from its config by a symbolic run still reads
    # unbuilt until its first call, which would stop a second merge.
    copy.built = True
    return copy


def _is_graph_model(model):
    return isinstance(model, keras.Sequential) or _is_functional(model)


def _is_functional(model):
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def _reparameterize_graph(model):
    """Clone a Functional or Sequential graph, merging layer by layer."""
    copied = []

    def clone_layer(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer  # a stateless keras.ops operation in the graph
        if isinstance(layer, keras.Model):
            return reparameterize(layer)
        if is_reparameterizable(layer):
            merged = layer.reparameterize()
            if not isinstance(merged, keras.layers.Layer) or not merged.built:
                raise TypeError(
                    f"`{type(layer).__name__}.reparameterize()` of layer "
                    f"'{layer.name}' must return a built keras Layer. "
                    f"Received: {merged!r}"
                )
            return merged
        _refuse_unmergeable(layer)
        copy = type(layer).from_config(layer.get_config())
        copied.append((layer, copy))
        return copy

    def call_layer(layer, *args, **kwargs):
        # A merged layer may accept fewer call arguments than the layer it
        # replaces (`Dense.call` takes no `mask`; Keras still propagates the
        # mask around it), so arguments it does not take are left out.
        accepted = inspect.signature(layer.call).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        merged_model = keras.models.clone_model(model, clone_function=clone_layer)
    else:
        merged_model = keras.models.clone_model(
            model, clone_function=clone_layer, call_function=call_layer
        )
    # Plain layers were built by being called inside clone_model; now they
    # get the original's weights (clone_model itself copies none).
    for original, copy in copied:
        copy.set_weights(original.get_weights())
    return merged_model


def _refuse_unmergeable(layer):
    """Raise if `layer` holds re-parameterizable sublayers it cannot merge."""
    for sublayer in layer._flatten_layers(include_self=False, recursive=True):
        if is_reparameterizable(sublayer):
            raise TypeError(
                f"Layer '{layer.name}' of type {type(layer).__name__} contains "
                f"the re-parameterizable layer '{sublayer.name}' "
                f"({type(sublayer).__name__}) but has no `reparameterize()` "
                "method, so it cannot be merged. Add one, e.g. "
                "`def reparameterize(self): return "
                "keras_hrf.reparameterized_copy(self, <hrf_argument>=None)`."
            )


def _direct_sublayers(layer):
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _own_variables(layer):
    # Variables created by `layer.add_weight` itself, not by its sublayers.
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def _transfer_weights(source, target):
    """Copy `source`'s weights into the same-structured `target`, merging
    where `source` has a re-parameterizable sublayer and `target` a plain one."""
    source_vars, target_vars = _own_variables(source), _own_variables(target)
    _check_same(source, target, len(source_vars), len(target_vars), "own variables")
    for source_var, target_var in zip(source_vars, target_vars):
        _check_same(source, target, source_var.shape, target_var.shape, "a variable shape")
        # Through NumPy, so that no backend buffer is shared: JAX training
        # donates (deletes) the original's buffers after each step.
        target_var.assign(np.array(keras.ops.convert_to_numpy(source_var)))

    sources, targets = _direct_sublayers(source), _direct_sublayers(target)
    _check_same(source, target, len(sources), len(targets), "sublayer count")
    for sub_source, sub_target in zip(sources, targets):
        if type(sub_source) is type(sub_target):
            _transfer_weights(sub_source, sub_target)
        elif is_reparameterizable(sub_source):
            merged = sub_source.reparameterize()
            _check_same(source, target, type(merged), type(sub_target), "merged sublayer type")
            sub_target.set_weights(merged.get_weights())
        else:
            _check_same(source, target, type(sub_source), type(sub_target), "sublayer type")


def _check_same(source, target, expected, received, what):
    if expected != received:
        raise ValueError(
            f"Cannot copy the weights of layer '{source.name}' into its merged "
            f"copy of type {type(target).__name__}: {what} differs "
            f"(original: {expected}, copy: {received}). A composite layer must "
            "create the same sublayers in the same order whatever its HRF "
            "setting, with HRF layers where the copy has plain ones, and "
            "build them in `build()` (or `build_from_config()`)."
        )
