#!/usr/bin/env bash
# cbr-lite's one entry point: set everything up, then do one job.
#
#   ./run.sh            same as ./run.sh lab
#   ./run.sh lab        open JupyterLab on notebooks/
#   ./run.sh execute    run every notebook headless; executed copies go to build/notebooks/
#   ./run.sh test       the whole test suite: unit tests, doctests and every notebook under nbval
#   ./run.sh unit       unit tests and doctests only, without the browser test (a few minutes)
#   ./run.sh python     say which Python and venv the other jobs use, and set nothing up
#
# "Set everything up" means: a virtual environment, cbr-lite installed into it in editable mode with its
# test extras, and the venv's Jupyter kernel. It is done once and redone only when pyproject.toml changes,
# so every later run works offline.
#
# Which Python: cbr-lite supports Python 3.10-3.13. By default the newest of python3.13 ... python3.10,
# python3 on PATH that runs, in .venv. PYTHON=python3.12 (or a path) chooses one, in a venv of its own
# (.venv-3.12), so no venv made with another Python is reused: run.sh uses exactly that Python or stops
# with one line saying why. A pyenv shim that fails because pyenv has selected another version is taken
# to mean that Python as pyenv installed it (run.sh says which file it uses).
set -euo pipefail

CALLER_DIR=$PWD                   # a relative PYTHON=../bin/python is relative to where run.sh was called
cd "$(dirname "${BASH_SOURCE[0]}")"
export TF_CPP_MIN_LOG_LEVEL=3     # TensorFlow's C++ start-up chatter would otherwise reach the notebooks' stderr
export PYTHONDONTWRITEBYTECODE=1
SUPPORTED="3.10, 3.11, 3.12 or 3.13"

die() { echo "run.sh: $*" >&2; exit 1; }

# "3.12" for a command that runs Python, nothing (and failure) for one that does not run.
version_of() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

is_supported() {
    case "$1" in 3.10|3.11|3.12|3.13) return 0 ;; *) return 1 ;; esac
}

# A pyenv shim (<root>/shims/NAME) runs NAME only from the versions pyenv has selected (and fails with
# "command not found" for the others); this prints the newest <root>/versions/*/bin/NAME installed.
pyenv_installed() {
    local shim=$1
    [ "$(basename "$(dirname "$shim")")" = shims ] || return 1
    local found
    found=$(ls -d "$(dirname "$(dirname "$shim")")"/versions/*/bin/"$(basename "$shim")" 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] && echo "$found"
}

# The path of the Python that PYTHON names, or one line on stderr saying why it cannot be used.
python_from_env() {
    local path version installed=
    path=$(cd "$CALLER_DIR" && command -v -- "$PYTHON") ||
        die "PYTHON=$PYTHON: no such command; set PYTHON to Python $SUPPORTED (a name on PATH or a path)"
    [[ $path = /* ]] || path=$CALLER_DIR/$path
    if ! version=$(version_of "$path"); then
        installed=$(pyenv_installed "$path") && version=$(version_of "$installed") ||
            die "PYTHON=$PYTHON: $path does not run (try '$path --version'); set PYTHON to a Python that runs"
    fi
    if ! is_supported "$version"; then
        case "$version" in
            [0-2].*|3.[0-9]) die "PYTHON=$PYTHON is Python $version, too old: cbr-lite needs Python $SUPPORTED" ;;
            *) die "PYTHON=$PYTHON is Python $version, too new: tensorflow 2.21 has no wheels for it; use Python $SUPPORTED" ;;
        esac
    fi
    if [ -n "${installed:-}" ]; then
        echo "run.sh: PYTHON=$PYTHON is a pyenv shim for a version pyenv has not selected; using $installed" >&2
        path=$installed
    fi
    echo "$path"
}

default_python() {
    local candidate version
    for candidate in python3.13 python3.12 python3.11 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && version=$(version_of "$candidate") && is_supported "$version"; then
            command -v "$candidate"
            return 0
        fi
    done
    die "needs Python $SUPPORTED and found none on PATH (set PYTHON=/path/to/python)"
}

# Sets PYTHON_PATH (the interpreter, empty when an existing .venv is reused as it is) and VENV.
choose_python() {
    if [ -n "${PYTHON:-}" ]; then
        PYTHON_PATH=$(python_from_env) || exit 1
        VENV=.venv-$(version_of "$PYTHON_PATH")
        if [ -x "$VENV/bin/python" ] && [ "$(version_of "$VENV/bin/python")" != "${VENV#.venv-}" ]; then
            die "$VENV was made with Python $(version_of "$VENV/bin/python"), not ${VENV#.venv-}; remove it and run again"
        fi
    else
        VENV=.venv
        PYTHON_PATH=
        [ -x "$VENV/bin/python" ] || PYTHON_PATH=$(default_python) || exit 1
    fi
}

setup() {
    choose_python
    if [ ! -x "$VENV/bin/python" ]; then
        echo "run.sh: creating $VENV with $("$PYTHON_PATH" --version) ($PYTHON_PATH)"
        "$PYTHON_PATH" -m venv "$VENV" ||
            die "could not create $VENV with $PYTHON_PATH (on Debian or Ubuntu: apt install python3-venv)"
    fi
    # Reinstall only when what we install has changed, so repeated runs are quick and offline.
    local want stamp=$VENV/.run-stamp
    want="$("$VENV/bin/python" --version) $(cksum < pyproject.toml)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "run.sh: installing cbr-lite and its dependencies into $VENV (a few minutes the first time)"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".[test]"
        # The kernel the notebooks name (kernelspec "python3", "Python 3 (ipykernel)", ipykernel's own default, so
        # that conda users' kernels match too): JupyterLab would otherwise mark every notebook modified on open.
        "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
        echo "$want" > "$stamp"
    fi
}

notebooks() {
    ls notebooks/[0-9][0-9]_*.ipynb
}

run_tests() {
    # One pytest run: unit tests (tests/), doctests (cbr_lite/), and each notebook executed and compared
    # with its committed outputs by nbval (sanitised of paths and timings; stderr must stay empty).
    "$VENV/bin/python" -m pytest -p no:cacheprovider --durations=10 "$@" \
        --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 600 \
        tests cbr_lite $(notebooks)
}

job=${1:-lab}
[ $# -gt 0 ] && shift
case "$job" in
    lab)
        setup
        exec "$VENV/bin/jupyter" lab --notebook-dir=notebooks "$@"
        ;;
    execute)
        setup
        mkdir -p build/notebooks
        for notebook in $(notebooks); do
            echo "run.sh: executing $notebook"
            "$VENV/bin/jupyter" nbconvert --to notebook --execute --log-level=ERROR \
                --output-dir build/notebooks "$notebook"
        done
        echo "run.sh: all notebooks ran; executed copies are in build/notebooks/"
        ;;
    test)
        setup
        run_tests "$@"
        ;;
    unit)
        setup
        "$VENV/bin/python" -m pytest -p no:cacheprovider -m "not browser" "$@" tests cbr_lite
        ;;
    python)
        choose_python
        echo "run.sh: $("${PYTHON_PATH:-$VENV/bin/python}" --version) (${PYTHON_PATH:-$VENV/bin/python}), venv $VENV"
        ;;
    *)
        die "unknown job '$job'; use one of: lab, execute, test, unit, python"
        ;;
esac
