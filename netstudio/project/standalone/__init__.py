"""Real Python modules that the standalone script export copies into the exported program.

Each module here runs on plain PyTorch (plus numpy/PIL/scikit-learn/torchvision where a data
source needs them) and never imports ``netstudio``: the script export reads their text as package
resources and writes it into ``train.py``. Because they are ordinary modules, the linter, the type
checker and the tests see them, and the library imports the same functions instead of keeping a copy.
"""
