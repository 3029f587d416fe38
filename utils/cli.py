"""Argument types shared by the command-line scripts (errors quote the value given),
the parser made from a script's docstring, and option objects made from parsed
arguments (``options_from_args``)."""

import argparse
import dataclasses
import math

from utils.image import check_input_size


def fraction(text):
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def int_at_least(minimum):
    """argparse type factory: an integer >= ``minimum``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
        return value

    return parse


def input_size(text):
    """argparse type: a network input side, a positive multiple of 32."""
    try:
        return check_input_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def docstring_parser(doc):
    """An ArgumentParser whose description is the first paragraph of ``doc`` (a
    script's docstring) and whose epilog is the rest, kept as written."""
    first, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(description=first, epilog=rest,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def positive_float(text):
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def fraction_at_most(maximum):
    """argparse type factory: a number in [0, ``maximum``]."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in [0, {maximum}], got {text!r}") from None
        if not 0.0 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be in [0, {maximum}], got {text!r}")
        return value

    return parse


def checked_by(read):
    """argparse type from ``read(text)``, a function raising ValueError with a message
    for a bad value: argparse prints that message (it hides other errors' text)."""

    def parse(text):
        try:
            return read(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(read, "__name__", "value")
    return parse


def options_from_args(options_class, args, **values):
    """An option object (a dataclass) from parsed arguments: each of its fields takes
    the argument of the same name where there is one; ``values`` set the others (or
    replace the arguments'). The one place a script's Namespace becomes an object the
    stages take."""
    names = {f.name for f in dataclasses.fields(options_class)}
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return options_class(**{**given, **values})
