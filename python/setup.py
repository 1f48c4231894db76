"""Records where this source tree lives, so an installed saeflow can find the
repository's build/libsaeflow.so (docs/python.md, "Finding the library")."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def run(self):
        super().run()
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = os.path.join(self.build_lib, "saeflow", "_where.py")
        with open(out, "w") as f:
            f.write("# written at install time by python/setup.py\n")
            f.write(f"REPO = {repo!r}\n")


setup(cmdclass={"build_py": BuildPy})
