"""Config loading for every workflow: nested dataclasses ← YAML recipe ← dotted ``key=value`` overrides.

Unknown keys are an error with a one-line message naming the key (``ConfigError: unknown key: optim.lrr``), values
are type-checked against the dataclass field types, and the resolved config can be dumped next to checkpoints. A
recipe may start from another (``base: other.yaml``) and state only what differs.

Usage::

    cfg = load_config(PretrainConfig, "workflows/configs/debug.yaml", ["optim.lr=1e-3", "model.n_layers=4"])
"""

from __future__ import annotations

import dataclasses
import posixpath
import types
import typing
from typing import Any, TypeVar

import yaml

from lumos import storage

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config key or value; the message is one line naming the key."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp`` (int, float, bool, str, Optional, list, tuple, dict)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"bad value for {key}: {value!r}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return build_dataclass(tp, value, prefix=key + ".")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} must be a bool, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{key} must be an int, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{key} must be an int, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a float, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a float, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (arg, *_) = typing.get_args(tp) or (Any,)
        out = [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _over_default(cls: type, name: str, value: Any) -> Any:
    """A mapping for a section whose default is a configured instance (``field(default_factory=lambda:
    Section(steps=8))``) keeps the values that instance sets unless the mapping sets them too."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    try:
        plain = type(default)()
    except (TypeError, ValueError):  # a section without defaults of its own: nothing preset to keep
        return value
    preset = {g.name: getattr(default, g.name) for g in dataclasses.fields(default)
              if g.init and getattr(default, g.name) != getattr(plain, g.name)}
    return merge({k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in preset.items()}, value)


def build_dataclass(cls: type[T], data: dict, prefix: str = "") -> T:
    """Instantiate ``cls`` from a (nested) dict, rejecting unknown keys; ``ValueError``s from ``__post_init__``
    become :class:`ConfigError`."""
    types_ = _field_types(cls)
    kwargs = {}
    for k, v in data.items():
        if k not in types_:
            raise ConfigError(f"unknown key: {prefix}{k}")
        kwargs[k] = _coerce(_over_default(cls, k, v), types_[k], prefix + k)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def _put(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def _set_dotted(tree: dict, dotted: str, raw: str) -> None:
    _put(tree, dotted, yaml.safe_load(raw) if raw != "" else "")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def given_flags(args: Any, keys: dict[str, str]) -> dict:
    """The command-line flags a user gave, as a nested config tree: ``keys`` maps an argparse ``dest`` to its dotted
    config key (``{"steps": "sampler.steps"}``); flags left at ``None`` (or ``False`` for switches) are not given."""
    tree: dict = {}
    for dest, dotted in keys.items():
        value = getattr(args, dest)
        if value is not None and value is not False:
            _put(tree, dotted, value)
    return tree


def read_tree(path: str, chain: tuple[str, ...] = ()) -> dict:
    """The mapping a YAML config file holds, on top of its ``base:`` file if it names one (a path relative to the
    file's folder, or absolute / s3://): the file's own sections merge into the base's key by key; a list (such as
    ``stages``) replaces the base's whole."""
    try:
        loaded = yaml.safe_load(storage.read_text(path)) or {}
    except FileNotFoundError:
        named = f" (the base of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{named}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    if not isinstance(base, str) or not base:
        raise ConfigError(f"base: in {path} must be the path of another config file, got {base!r}")
    base_path = base if "://" in base or posixpath.isabs(base) else posixpath.join(posixpath.dirname(path), base)
    if posixpath.normpath(base_path) in {posixpath.normpath(p) for p in (*chain, path)}:
        raise ConfigError(f"base: {base} in {path} makes a cycle ({' -> '.join((*chain, path, base_path))})")
    return merge(read_tree(base_path, (*chain, path)), loaded)


def load_config(cls: type[T], path: str | None = None, overrides: list[str] | None = None,
                flags: dict | None = None) -> T:
    """Defaults of ``cls`` ← YAML file at ``path`` (local or s3://; with its ``base:`` file, see :func:`read_tree`)
    ← ``flags`` (a nested tree, e.g. from :func:`given_flags`) ← ``key.sub=value`` overrides."""
    tree = read_tree(path) if path else {}
    tree = merge(tree, flags or {})
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        k, v = item.split("=", 1)
        _set_dotted(tree, k.strip(), v)
    return build_dataclass(cls, tree)


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML (what gets saved next to checkpoints)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
