"""Build script.  Pure-Python install unless torch is importable at build time (see README)."""
from setuptools import setup

setup()
