"""The one native module (vnet._datapath, see docs/design.md): built by `pip install`
against Debian's libcrypto. VNET_SANITIZE=1 builds it with ASan and UBSan (make sanitize)."""

import os

from setuptools import Extension, setup

flags = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=c11"]
link: list[str] = []
if os.environ.get("VNET_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer", "-g"]
    flags = [f for f in flags if f != "-O2"] + ["-O1", *sanitize]
    link = sanitize

setup(ext_modules=[Extension(
    "vnet._datapath", ["src/vnet/_datapath.c"], libraries=["crypto"],
    extra_compile_args=flags, extra_link_args=link,
)])
