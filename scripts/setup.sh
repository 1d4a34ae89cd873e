#!/usr/bin/env bash
# Installs CoPersona with the embedded default models into the current Python environment.
# torch comes first and pinned: on these machines 2.13.0 is a local CPU wheel, while an unpinned
# torch pulled in by a dependency would download the registry's CUDA build (several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[embedded,hf,train,rec,serve,test]'
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_install() {
    $SUDO apt-get install -y -q "$@" >/dev/null \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "$@" >/dev/null; }
}
# METEOR's WordNet, offline: Debian ships the database; NLTK's layout is generated from it.
if ! python3 -c "from nltk.corpus import wordnet; wordnet.ensure_loaded()" 2>/dev/null; then
    if [ ! -e /usr/share/wordnet/data.noun ]; then apt_install wordnet-base wordnet-sense-index; fi
    python3 scripts/install_wordnet.py
fi
# The web page's test drives Debian's Chromium headless (through playwright, no browser download).
if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
# The store's tests also run on PostgreSQL: a throwaway server of Debian's package, started by the tests.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt_install postgresql; fi
# pyenv only sees a new console script (`copersona`) after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
