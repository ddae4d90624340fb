#!/usr/bin/env bash
# cbr-lite's one entry point: set everything up, then do one job.
#
#   ./run.sh            same as ./run.sh lab
#   ./run.sh lab        open JupyterLab on notebooks/
#   ./run.sh execute    run every notebook headless; executed copies go to build/notebooks/
#   ./run.sh test       the whole test suite: unit tests, doctests and every notebook under nbval
#   ./run.sh unit       unit tests and doctests only (a few minutes)
#
# "Set everything up" means: a virtual environment in .venv (Python 3.10-3.12; set PYTHON=/path/to/python
# to choose one), cbr-lite installed into it in editable mode with its test extras, and the venv's Jupyter
# kernel. It is done once and redone only when pyproject.toml changes, so every later run works offline.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
VENV=.venv
STAMP=.run-stamp
export TF_CPP_MIN_LOG_LEVEL=3     # TensorFlow's C++ start-up chatter would otherwise reach the notebooks' stderr
export PYTHONDONTWRITEBYTECODE=1

die() { echo "run.sh: $*" >&2; exit 1; }

find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.12 python3.11 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python=$(find_python) || die "needs Python 3.10, 3.11 or 3.12 (set PYTHON=/path/to/python)"
        echo "run.sh: creating $VENV with $("$python" --version)"
        "$python" -m venv "$VENV"
    fi
    # Reinstall only when what we install has changed, so repeated runs are quick and offline.
    local want
    want="$("$VENV/bin/python" --version) $(cat pyproject.toml | cksum)"
    if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
        echo "run.sh: installing cbr-lite and its dependencies into $VENV (a few minutes the first time)"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".[test]"
        "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cbr-lite)" >/dev/null
        echo "$want" > "$STAMP"
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
        "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" tests cbr_lite
        ;;
    *)
        die "unknown job '$job'; use one of: lab, execute, test, unit"
        ;;
esac
