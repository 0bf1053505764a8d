"""Package discovery for the wheel; every other setting is in pyproject.toml.

``fastadapt`` and its subpackages are found under ``fastadapt/``, and the
top-level ``kernels/`` folder (with any subpackages it grows) installs as
``fastadapt.kernels``, as ``[tool.setuptools.package-dir]`` maps it.
"""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["fastadapt", "fastadapt.*"])
      + ["fastadapt.kernels"]
      + [f"fastadapt.kernels.{name}" for name in find_packages("kernels")])
