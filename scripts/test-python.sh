#!/usr/bin/env bash
# The Python package's tests: a virtual environment outside the source tree
# (build/pyvenv, git-ignored; PYVENV overrides) from PyPI with numpy and pytest
# only (scipy and torch are optional: their tests are skipped when absent; CI
# must not pull torch), `pip install ./python`, then pytest against the
# libsaeflow.so and saeflow binary of BUILD (default build/).
# Exit status: pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
venv=$(realpath -m "${PYVENV:-$build/pyvenv}")
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check numpy pytest
fi
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall ./python
rm -rf python/build python/*.egg-info # setuptools' in-tree leftovers
export SAEFLOW_LIB="$PWD/$build/libsaeflow.so" SAEFLOW_EXE="$PWD/$build/saeflow"
# run from outside the source tree so the installed package is the one tested
cd "$build" && "$venv/bin/python" -m pytest -q -p no:cacheprovider "$OLDPWD/python/tests"
