#!/usr/bin/env bash
# Installs CoPersona with the embedded default models into the current Python environment.
# torch comes first and pinned: on these machines 2.13.0 is a local CPU wheel, while an unpinned
# torch pulled in by a dependency would download the registry's CUDA build (several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[embedded,hf,test]'
# pyenv only sees a new console script (`copersona`) after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
