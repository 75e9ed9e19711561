"""The course's methods, by name: an explicit list, in course order.

    method, variant = get_method("zimmermann2017:direct")

A new paper adds its ``METHOD`` to ``METHODS`` below; nothing else registers anything.
"""
from __future__ import annotations

import dataclasses

from handlib.methods import Method, full_name, split_name
from handlib.models import backbone, boukhayma2019, cai2018, ge2019, zhou2020, zimmermann2017

METHODS: dict[str, Method] = {method.name: method for method in (backbone.METHOD, zimmermann2017.METHOD,
                                                                   cai2018.METHOD, boukhayma2019.METHOD,
                                                                   zhou2020.METHOD, ge2019.METHOD)}


def get_method(name, variant: str | None = None) -> tuple[Method, str | None]:
    """The ``Method`` and variant of a name ("method" or "method:variant"), or of a ``Method`` object
    (e.g. one a test or a student builds, which need not be registered).

    Raises:
        ValueError: an unknown method or variant, naming the known ones.
    """
    if isinstance(name, Method):
        method = name
    else:
        method_name, named_variant = split_name(name)
        if method_name not in METHODS:
            raise ValueError(f"method: unknown method {method_name!r}; expected one of {', '.join(METHODS)}")
        method, variant = METHODS[method_name], variant or named_variant
    if variant is not None and variant not in method.variants:
        raise ValueError(f"variant: {method.name} has no variant {variant!r}; expected one of "
                         f"{sorted(method.variants) or 'none'}")
    return method, variant


def available_names(variants: bool = True) -> list[str]:
    """Every method name, and with ``variants`` every "method:variant" after its method."""
    return [full_name(method.name, variant) for method in METHODS.values()
            for variant in [None, *(method.variants if variants else ())]]


def shipped_names() -> list[str]:
    """The names whose ``full`` checkpoints ship with handlib (``make full-checkpoints`` trains them):
    every method, and its variants that ship (``Variant.ships``)."""
    return [full_name(method.name, variant) for method in METHODS.values()
            for variant in [None, *(name for name, v in method.variants.items() if v.ships)]]


def config_from_dict(method: Method, profile: str, values: dict):
    """The config a checkpoint stored as a dict (``dataclasses.asdict``), as the method's dataclass."""
    config = method.configs[profile]
    fields = {field.name: field for field in dataclasses.fields(config)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"config: {type(config).__name__} has no fields {sorted(unknown)}; the checkpoint was made "
                         "by another version of the method")
    typed = {key: _tuples(value) if isinstance(getattr(config, key), tuple) else value for key, value in values.items()}
    return dataclasses.replace(config, **typed)


def _tuples(value):
    """JSON's lists back to the config's tuples, at every depth (e.g. ``synth_knobs``)."""
    return tuple(_tuples(item) if isinstance(item, list) else item for item in value)
