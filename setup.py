"""The package list: kdprune's own packages plus `kdprune.conf`, the top-level conf/ folder that
pyproject.toml maps into the package, so a built wheel can compose runs from any folder."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["kdprune", "kdprune.*"]), "kdprune.conf"])
