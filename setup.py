"""Packaging beyond what pyproject.toml can say: the zoo's specs (models/) and recipes (inference/) are shipped
inside the package as ppgen/zoo/models and ppgen/zoo/inference, so an installed ppgen has them."""

from setuptools import find_packages, setup

ZOO = {"ppgen.zoo.models": "models", "ppgen.zoo.inference": "inference"}

setup(
    packages=find_packages(include=["ppgen", "ppgen.*"]) + list(ZOO),
    package_dir=ZOO,
    package_data={name: ["*.yaml"] for name in ZOO},
)
