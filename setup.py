"""Build the optional native part of datafed (metadata lives in pyproject.toml).

``datafed.hazmat._djn_native`` is the fixed-base product loop of Paillier encryption in
C over GMP's mpn functions (needs a C compiler and GMP's header, Debian's
``libgmp-dev``). It is optional: without it the same products run in Python, about
half as fast (docs/paillier.md), and ``datafed.hazmat.native_available()`` says which.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "datafed.hazmat._djn_native",
            sources=["datafed/hazmat/_djn_native.c"],
            libraries=["gmp"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        )
    ]
)
