"""Packaging: the package under src/, plus the repository's configs/ shipped as package data.

configs/ stays at the repository root (where the README's commands name it); at build time it is
mapped to ``scorealign/configs`` so an installed wheel finds the shipped configs by name
(``scorealign --config digits_loop``, ``scorealign configs``). Everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    packages=find_packages("src") + ["scorealign.configs"],
    package_dir={"": "src", "scorealign.configs": "configs"},
    package_data={"scorealign": ["assets/*", "assets/**/*"],
                  "scorealign.configs": sorted({f"{p.parent.name}/*.yaml"
                                                for p in Path("configs").glob("*/*.yaml")})},
)
