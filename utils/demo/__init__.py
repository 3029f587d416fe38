"""The demo behind ``make demo``: a synthetic dataset of shapes (drawn by
``shapes_render``, written in VOC layout by ``shapes_voc``, command line
``shapes_dataset``) and a driver (``driver``, also ``python -m utils.demo``) that
runs the project's scripts on it end to end, as a user would type them. Nothing
in the product imports this package.
"""
