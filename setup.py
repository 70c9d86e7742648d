"""Package discovery for the wheel (the rest of the metadata is in pyproject.toml).

Every package under pki/, csms/ and cli/ ships, found by setuptools rather than listed by
hand (a hand-kept list once missed csms.db, and the installed `pkictl` failed with
ModuleNotFoundError, #22); tests/ and bench/ do not. policies/ ships as the package
`pkictl_policies` (mapped in pyproject's [tool.setuptools.package-dir]), which
pyproject's `packages.find` cannot express alongside discovery.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["pki", "pki.*", "csms", "csms.*", "cli", "cli.*"]),
        "pkictl_policies",
    ],
)
