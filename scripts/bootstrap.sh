# Sourced by scripts/serve and scripts/test: make .venv and install the requirements,
# again only when a requirements file changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(cat requirements*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    # The project itself, editable: the `agent-mail` command (pyproject.toml); its
    # dependencies are the pinned requirements above.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e . --no-deps
    echo "$wanted" > "$stamp"
fi
# The Turso server (tursodb --sync-server) for replica mode's tests and local trials, pinned.
TURSODB_VERSION=0.7.0
if [ "$(cat .tools/tursodb.version 2>/dev/null)" != "$TURSODB_VERSION" ]; then
    npm install --prefix .tools/turso --no-audit --no-fund --silent --no-save \
        "@tursodatabase/cli-linux-x64-gnu@$TURSODB_VERSION"
    echo "$TURSODB_VERSION" > .tools/tursodb.version
fi
