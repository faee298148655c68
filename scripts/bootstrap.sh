# Sourced by scripts/serve, scripts/test and scripts/package: make .venv and install what the
# caller needs, again only when a requirements file changed.
#   BOOTSTRAP=serve  the server's requirements only (requirements.txt)
#   BOOTSTRAP=test   (default) also the test tools (requirements-dev.txt), the pinned Turso
#                    server (npm) and Chromium for the browser tests (apt, when run as root)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
BOOTSTRAP="${BOOTSTRAP:-test}"
requirements=requirements-dev.txt
[ "$BOOTSTRAP" = serve ] && requirements=requirements.txt
if [ ! -x .venv/bin/python ]; then
    echo "installing dependencies (first run)…" >&2
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements-$BOOTSTRAP.sha256
wanted=$(cat requirements*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "installing dependencies ($requirements)…" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
    # The project itself, editable: the `agent-mail` command (pyproject.toml); its
    # dependencies are the pinned requirements above.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e . --no-deps
    echo "$wanted" > "$stamp"
fi
[ "$BOOTSTRAP" = serve ] && return 0
# The Turso server (tursodb --sync-server) for replica mode's tests and local trials, pinned.
TURSODB_VERSION=0.7.0
if [ "$(cat .tools/tursodb.version 2>/dev/null)" != "$TURSODB_VERSION" ]; then
    echo "installing the Turso server (tursodb $TURSODB_VERSION)…" >&2
    npm install --prefix .tools/turso --no-audit --no-fund --silent --no-save \
        "@tursodatabase/cli-linux-x64-gnu@$TURSODB_VERSION"
    echo "$TURSODB_VERSION" > .tools/tursodb.version
fi
# Debian's Chromium for the browser tests (tests/browser.py; Playwright's own download is not used).
if ! command -v chromium > /dev/null && [ -z "${CHROMIUM:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "installing chromium (apt-get)…" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null
    else
        echo "note: chromium is not installed; the browser tests will be skipped (apt-get install chromium, or set CHROMIUM)" >&2
    fi
fi
