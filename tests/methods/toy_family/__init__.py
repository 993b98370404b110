"""A toy ninth family, kept as the files a new family adds (``toy/`` is its folder under
``squid_monai/methods``, ``toy.json`` its config); ``tests/methods/test_toy_family.py`` installs
them in a temporary folder and runs it end to end. Not a package of the test suite's own
modules: the folder's files are read as text."""
