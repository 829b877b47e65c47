#!/usr/bin/env bash
# Packs what benchmarks/gpu_check.sh needs on a lent GPU machine, which reaches no package registry and receives the
# repository alone (64 MiB at most): wheels of the versions tested here that its image lacks or holds in other
# versions (for its Python, 3.12 by default), SmolLM2's config and tokenizer (the 98 MB weights cannot travel), and
# the RTE data. Into .gpu_carry/ (git-ignored), which the device call names in `carry`.
#
#   benchmarks/gpu_prepare.sh                    # then: device run "bash benchmarks/gpu_check.sh", carry .gpu_carry
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${PY_VERSION:-3.12}
CARRY=${CARRY:-.gpu_carry}
DATA=${DATA:-../shared/data}
PYTHON=${PYTHON:-.venv/bin/python}

rm -rf "$CARRY"
mkdir -p "$CARRY/wheels" "$CARRY/data/FewGLUE_32dev" "$CARRY/smollm2"
pins=$("$PYTHON" -c '
from importlib.metadata import version
names = ["optuna", "alembic", "sqlalchemy", "colorlog", "mako", "datasets", "dill", "multiprocess", "transformers",
         "tokenizers", "huggingface-hub", "peft"]
print(" ".join(f"{n}=={version(n)}" for n in names))')
"$PYTHON" -m pip download --quiet --no-deps --python-version "$PY_VERSION" --only-binary=:all: -d "$CARRY/wheels" $pins
cp -r "$DATA/FewGLUE_32dev/RTE" "$CARRY/data/FewGLUE_32dev/"
folder=$("$PYTHON" -c "from autoplace.backbones import smollm2_folder; print(smollm2_folder())")
for file in "$folder"/*; do
  case "$file" in *.safetensors) ;; *) cp "$file" "$CARRY/smollm2/" ;; esac
done
du -sh "$CARRY"
