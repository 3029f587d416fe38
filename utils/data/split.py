"""Random splits of a dataset, the same for the same seed.

:func:`hold_out` cuts a list in two: a part of ``fraction * len(items)`` items and
the rest. Which items fall in the part is given by a *draw*, a function
``draw(n, count) -> order`` returning a permutation of ``range(n)`` whose first
``count`` indices make the part. The draws below keep the splits of each caller
reproducible from its seed:

* :func:`sampled`: ``random.Random.sample`` (VOC splits, ``voc_annotation.py``).
* :func:`shuffled`: ``random.Random.shuffle`` (the validation part held out of the
  training data).
* :func:`permuted`: a NumPy generator's permutation (the shapes dataset).
* no draw: the items in the order given, e.g. to cut again a list already drawn.

A split in two levels (e.g. test, then val out of what is left) is two calls;
:func:`voc_splits` names the four VOC lists.
"""

import math

#: Rounding of ``fraction * n`` to a count: Python's ``round`` (halves to even)...
ROUND_HALF_EVEN = "half-even"
#: ... or halves up (``floor(x + 0.5)``).
ROUND_HALF_UP = "half-up"
ROUNDINGS = (ROUND_HALF_EVEN, ROUND_HALF_UP)


def check_fraction(name, value):
    """Raises ValueError, naming the argument, when ``value`` is outside [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}.")


def part_size(n, fraction, rounding=ROUND_HALF_EVEN, minimum=0):
    """The number of items ``fraction`` of ``n`` makes.

    Args:
        n: number of items.
        fraction: 0 to 1.
        rounding: ROUND_HALF_EVEN or ROUND_HALF_UP.
        minimum: the smallest count returned when ``n`` allows it.

    Returns:
        int in ``[0, n]``.
    """
    if rounding == ROUND_HALF_UP:
        count = int(math.floor(n * fraction + 0.5))
    elif rounding == ROUND_HALF_EVEN:
        count = int(round(fraction * n))
    else:
        raise ValueError(f"Unknown rounding {rounding!r}; use one of {ROUNDINGS}.")
    return min(max(count, minimum), n)


def hold_out(items, fraction, draw=None, *, rounding=ROUND_HALF_EVEN, minimum=0):
    """Splits items into a drawn part of ``fraction`` of them and the rest.

    Args:
        items: a sequence.
        fraction: share of the items in the part, 0 to 1.
        draw: ``draw(n, count)`` returning a permutation of ``range(n)`` whose first
            ``count`` indices make the part (see :func:`sampled`, :func:`shuffled`,
            :func:`permuted`); None keeps the order given.
        rounding: how ``fraction * len(items)`` becomes a count (see :func:`part_size`).
        minimum: the smallest part when there are enough items.

    Returns:
        ``(part, rest)``: two lists, each in the order of the draw.

    Raises:
        ValueError: ``fraction`` is outside [0, 1].
    """
    check_fraction("fraction", fraction)
    n = len(items)
    count = part_size(n, fraction, rounding, minimum)
    order = list(draw(n, count)) if draw is not None else list(range(n))
    return [items[i] for i in order[:count]], [items[i] for i in order[count:]]


def sampled(rng):
    """A draw by ``rng.sample``: the part as ``random.Random.sample`` picks it, then the
    rest in the order given.

    Args:
        rng: a ``random.Random``.
    """

    def draw(n, count):
        part = rng.sample(range(n), count)
        taken = set(part)
        return part + [i for i in range(n) if i not in taken]

    return draw


def shuffled(rng):
    """A draw by ``rng.shuffle`` of all the indices.

    Args:
        rng: a ``random.Random``.
    """

    def draw(n, count):
        order = list(range(n))
        rng.shuffle(order)
        return order

    return draw


def permuted(rng):
    """A draw by a NumPy generator's permutation of all the indices.

    Args:
        rng: a ``numpy.random.Generator``.
    """

    def draw(n, count):
        return [int(i) for i in rng.permutation(n)]

    return draw


def voc_splits(train, val, test):
    """The four VOC split lists: ``trainval`` (train and val), ``train``, ``val``, ``test``.

    Returns:
        dict split name -> sorted list.
    """
    return {
        "trainval": sorted([*train, *val]),
        "train": sorted(train),
        "val": sorted(val),
        "test": sorted(test),
    }
