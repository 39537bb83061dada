"""Root conftest for the plugin's own test suite: pytester drives inner pytest runs."""

pytest_plugins = ["pytester"]
