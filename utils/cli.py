"""Argument types shared by the command-line scripts (errors quote the value given),
and the parser made from a script's docstring."""

import argparse

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
