"""What every bytezoo model adds to transformers' ``PreTrainedModel``: loading from hub URLs, and loading that fails
loudly instead of silently random-initialising what a checkpoint lacks.

The model files import this inside ``try``: a checkpoint loaded with ``trust_remote_code`` where bytezoo is not
installed falls back to transformers' plain behaviour.
"""
from __future__ import annotations

import os
import re

from ..errors import ByteZooError
from ..untrusted import jsonio
from ..untrusted.names import check_relative_path


class CheckpointError(ByteZooError, ValueError):
    """A checkpoint directory that cannot be loaded as it is: names the file and the problem."""


class CheckpointShapeError(CheckpointError, RuntimeError):
    """Weights whose shapes the config contradicts (a head of another label count, another vocabulary): a
    ``RuntimeError`` too, as transformers raises for it, so code written for transformers catches it; pass
    ``ignore_mismatched_sizes=True`` to initialise those weights fresh instead."""


def _check_checkpoint_files(directory: str) -> None:
    """Fail early, naming the file, on a checkpoint whose weights are missing, truncated or corrupt."""
    from safetensors import SafetensorError, safe_open

    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{config_path}: missing; {directory!r} is not a saved bytezoo/transformers checkpoint")
    for shard in _weight_files(directory):
        path = os.path.join(directory, shard)
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: missing; the checkpoint has no weights (never loading random ones instead)")
        try:  # safetensors checks the header and that the tensors exactly cover the file
            with safe_open(path, framework="pt"):
                pass
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({error})") from error


LOADING_OPTIONS = ("dtype", "torch_dtype")  # from_pretrained's own options that share a name with a config field
# keyword arguments of a config's __init__ that are not fields (num_labels sets id2label)
CONFIG_INIT_KEYS = ("num_labels",)

_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64", "float", "half", "double", "auto")


def _load_config(config_class, directory: str, overrides: dict):
    """``config_class`` from ``directory/config.json``: the declared fields' types and the dtype are checked first,
    and whatever else goes wrong building it becomes a :class:`CheckpointError` naming the file."""
    from .configuration_utils import ConfigError, check_config_overrides, declared_fields

    config_path = os.path.join(directory, "config.json")
    try:
        with open(config_path, "rb") as handle:
            document = jsonio.loads(handle.read())  # strict: nesting 100,000 deep is one line, not a RecursionError
    except ValueError as error:
        raise CheckpointError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{config_path}: not a JSON object")
    found, expected = document.get("model_type"), getattr(config_class, "model_type", None)
    if expected and found != expected:  # another family: its weights cannot fill this one's layers
        raise CheckpointError(f"{config_path}: a {found!r} checkpoint, not {expected!r}: {config_class.__name__} "
                              "cannot read it (the Auto classes and bytezoo.from_pretrained pick the class from "
                              "config.json)")
    fields = declared_fields(config_class)
    try:
        check_config_overrides(config_class, {k: v for k, v in document.items() if k in fields and k != "dtype"},
                               where=config_path)
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    for key in ("dtype", "torch_dtype"):
        value = document.get(key)
        if value is not None and not (isinstance(value, str) and value.replace("torch.", "") in _DTYPE_NAMES):
            raise CheckpointError(f"{config_path}: {key!r} must be one of {', '.join(_DTYPE_NAMES)}; got {value!r}")
    try:
        return config_class.from_pretrained(directory, **overrides)
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, OverflowError) as error:
        raise CheckpointError(f"{config_path}: cannot build {config_class.__name__} from it "
                              f"({type(error).__name__}: {error})") from None


def _fresh_head(model_class, config, expected: set[str], declared: set[str]) -> set[str]:
    """The weights of ``model_class``'s head that a checkpoint may lack, to be initialised fresh: those under
    ``model_class._fresh_head_prefixes`` (a classifier's ``score.``), when the checkpoint holds none of them and was
    not saved by ``model_class`` itself (its config's ``architectures``): a causal LM's checkpoint read into a
    classifier. A checkpoint with part of the head, or a classifier's own checkpoint without it, gets nothing fresh."""
    prefixes = tuple(getattr(model_class, "_fresh_head_prefixes", ()) or ())
    if not prefixes or any(name.startswith(prefixes) for name in declared):
        return set()
    if model_class.__name__ in (getattr(config, "architectures", None) or []):
        return set()
    return {name for name in expected if name.startswith(prefixes)}


def _check_shapes(model_class, config, directory: str, ignore_mismatched_sizes: bool = False) -> set[str]:
    """Compares the tensor shapes the config implies (a skeleton on the meta device: no memory) with those the
    safetensors headers declare, before anything is allocated: a config.json claiming a million units next to a
    small checkpoint is refused here, naming the tensors, instead of allocating terabytes first. Returns the head
    weights that may be initialised fresh (:func:`_fresh_head`). With ``ignore_mismatched_sizes`` (transformers'
    option: re-head a classifier with another label count) weights of another shape are left to transformers, which
    initialises them fresh and says so; missing weights are refused either way."""
    import torch
    from safetensors import safe_open

    prefix = f"{model_class.base_model_prefix}."
    declared, where = {}, {}
    for shard in _weight_files(directory):
        with safe_open(os.path.join(directory, shard), framework="pt") as handle:
            for name in handle.keys():
                if name in where:  # which copy would load depends on the loader: refuse both
                    raise CheckpointError(f"{directory}: tensor {name!r} is in both {where[name]} and {shard}; a "
                                          "checkpoint holds each tensor once")
                declared[name], where[name] = tuple(handle.get_slice(name).get_shape()), shard
    layers = getattr(config, "num_layers", None)
    if isinstance(layers, int) and layers > len(declared):  # each layer holds at least one tensor
        raise CheckpointError(f"{os.path.join(directory, 'config.json')}: num_layers {layers:,} but the weights hold "
                              f"only {len(declared)} tensors (a skeleton of that many layers is not even built)")
    try:
        with torch.device("meta"):
            skeleton = model_class(config)
    except ByteZooError:
        raise  # a setting the model refuses by name (a pooling mode its family lacks): that message, as it is
    except (RuntimeError, ValueError, OverflowError, TypeError) as error:  # e.g. sizes whose product overflows
        raise CheckpointError(f"{os.path.join(directory, 'config.json')}: its sizes cannot be built "
                              f"({type(error).__name__}: {error})") from None
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    fresh = _fresh_head(model_class, config, set(expected), set(declared))
    wrong, missing = [], []
    for name, shape in expected.items():
        saved = declared.get(name, declared.get(prefix + name, declared.get(name.removeprefix(prefix))))
        if saved is None:
            if name not in fresh:
                missing.append(name)
        elif saved != shape:
            wrong.append(f"{name} {list(saved)} in the file, {list(shape)} by the config")
    if missing:  # never a silently random layer, and never the cost of building one first
        raise CheckpointError(f"{directory}: checkpoint does not match {model_class.__name__}'s config: missing "
                              f"weights {sorted(missing)[:8]}"
                              + (f" (and {len(missing) - 8} more)" if len(missing) > 8 else ""))
    if wrong and not ignore_mismatched_sizes:
        raise CheckpointShapeError(f"{os.path.join(directory, 'config.json')}: the config does not match the weights: "
                                   + "; ".join(wrong[:4]) + (f" (and {len(wrong) - 4} more)" if len(wrong) > 4 else "")
                                   + "; pass ignore_mismatched_sizes=True to initialise these fresh")
    return fresh


def _weight_files(directory: str) -> list[str]:
    """The checkpoint's safetensors files: those its index lists, or the single ``model.safetensors``. The index's
    file names come from outside: each must be a ``.safetensors`` file inside the checkpoint's folder (checked before
    anything opens it), and its weight map may name a tensor only once."""
    index_path = os.path.join(directory, "model.safetensors.index.json")
    if not os.path.isfile(index_path):
        return ["model.safetensors"]
    try:
        with open(index_path, "rb") as handle:
            weight_map = jsonio.loads(handle.read())["weight_map"]  # strict: a tensor listed twice is refused
        files = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index_path}: not a valid safetensors index ({error})") from None
    for name in files:
        check_relative_path(name, f"weight file in {index_path}", CheckpointError)
        if not name.endswith(".safetensors"):
            raise CheckpointError(f"{index_path}: weight file {name!r} is not a .safetensors file")
    return files


def _check_finite(model, path) -> None:
    """Refuse weights that are not numbers (NaN, infinities): a model holding them computes NaN everywhere, and
    whatever it writes (features, probabilities, reports) would be NaN too."""
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.is_floating_point() and not bool(torch.isfinite(parameter).all()):
                raise CheckpointError(f"{path}: weight {name!r} holds NaN or infinite values; refusing the checkpoint "
                                      "(a training run that diverged?)")


class ByteZooModelMixin:
    """Mixed into each zoo model's ``PreTrainedModel`` base class (before ``PreTrainedModel`` in the bases)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' ``from_pretrained``, plus:

        * any fsspec URL (``s3://…``, ``file://…``, ``memory://…``, ``hf://…``) through
          :func:`bytezoo.hub.resolve`, which verifies and caches what it downloads;
        * a :class:`CheckpointError` naming the file for missing, truncated or corrupt weights, for a checkpoint of
          another family, and for weights that the architecture needs but the checkpoint lacks or has in another
          shape — never a silently random layer. The one exception is a new head on a checkpoint of another head (a
          classifier's ``score`` on a causal LM's checkpoint): it is initialised fresh, and transformers' loading info
          (``output_loading_info=True``) lists it under ``missing_keys``, the unused LM head under ``unexpected_keys``.
        """
        path = pretrained_model_name_or_path
        if isinstance(path, (str, os.PathLike)):
            from bytezoo.hub import resolve  # URLs and hub folders (``…@tag``) -> a verified local snapshot

            path = resolve(os.fspath(path))
        return_info = kwargs.pop("output_loading_info", False)
        ignore_mismatched = bool(kwargs.get("ignore_mismatched_sizes", False))
        from .configuration_utils import check_config_overrides, declared_fields, unknown_key_error

        # Config overrides among the kwargs, checked like create_model's; `dtype`/`torch_dtype` are loading options
        # that transformers reads itself ("auto" = the checkpoint's dtype), never config values.
        fields = {name: kind for name, kind in declared_fields(cls.config_class).items() if name not in LOADING_OPTIONS}
        shown = os.fspath(pretrained_model_name_or_path) if pretrained_model_name_or_path is not None else None
        where = f"{cls.__name__}.from_pretrained({shown!r})"
        check_config_overrides(cls.config_class, {k: v for k, v in kwargs.items() if k in fields}, where=where)
        fresh: set[str] = set()
        if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
            _check_checkpoint_files(str(path))
            if kwargs.get("config") is None:  # the config file is untrusted input: built here, every failure named
                overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in fields or key in CONFIG_INIT_KEYS}
                kwargs["config"] = _load_config(cls.config_class, str(path), overrides)
            fresh = _check_shapes(cls, kwargs["config"], str(path), ignore_mismatched)
        try:
            model, info = super().from_pretrained(path, *model_args, output_loading_info=True, **kwargs)
        except RuntimeError as error:  # transformers' report of weights whose shapes the config contradicts
            if "mismatched" not in str(error) and "size mismatch" not in str(error):
                raise
            raise CheckpointShapeError(f"{path}: checkpoint does not match {cls.__name__}'s config: weights of the "
                                       f"wrong shape ({str(error).splitlines()[0]})") from None
        except TypeError as error:  # transformers hands keys that are neither loading options nor config fields to
            match = re.search(r"unexpected keyword argument '(\w+)'", str(error))  # the model's __init__
            if match is None or match.group(1) not in kwargs:
                raise
            raise unknown_key_error(cls.config_class, match.group(1), where) from None
        _check_finite(model, path)
        problems = []
        if set(info.get("missing_keys") or ()) - fresh:
            problems.append(f"missing weights {sorted(set(info['missing_keys']) - fresh)}")
        if info.get("mismatched_keys") and not ignore_mismatched:
            problems.append(f"weights of the wrong shape {sorted(info['mismatched_keys'])}")
        if problems:
            error_class = (CheckpointShapeError if info.get("mismatched_keys") and not ignore_mismatched
                           else CheckpointError)
            raise error_class(f"{path}: checkpoint does not match {cls.__name__}'s config: " + "; ".join(problems))
        return (model, info) if return_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # With trust_remote_code, let AutoModel load the base model from a causal-LM checkpoint too.
        if getattr(self, "_auto_class", None) is not None:
            base = type(self.base_model)
            entry = f"{base.__module__.rsplit('.', 1)[-1]}.{base.__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": entry}
        return super().save_pretrained(save_directory, *args, **kwargs)
