#!/usr/bin/env bash
# Drift check: install lfi into a throwaway venv WITHOUT constraints.txt, so pip picks the newest releases
# that pyproject.toml's ranges allow (what a library user gets today), print which pins moved, and run the
# quick tests there. A failure here while `make test` passes means a new release of a dependency changed a
# result: fix the code (or narrow the range in pyproject.toml), then refresh constraints.txt.
#
#   scripts/check_drift.sh                 # quick tests (-m "not slow")
#   scripts/check_drift.sh -m slow -x      # other pytest arguments replace the default selection
#   KEEP=1 scripts/check_drift.sh          # keep the venv (its path is printed)
#
# torch stays at TORCH_SPEC (default: the release on this machine's disk); the other packages float.
# Needs PyPI (about 6 GB in the venv with torch's CUDA build; 5-10 minutes to install on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
DRIFT_VENV=${DRIFT_VENV:-$(mktemp -d "${TMPDIR:-/tmp}/lfi-drift.XXXXXX")}
if [[ -z "${KEEP:-}" ]]; then
    trap 'rm -rf "$DRIFT_VENV"' EXIT
fi

echo "drift venv: $DRIFT_VENV"
"$PYTHON" -m venv "$DRIFT_VENV"
# shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
"$DRIFT_VENV/bin/pip" install -q --upgrade-strategy eager $TORCH_SPEC -e '.[test]'

echo "== releases that differ from constraints.txt (pinned -> newest allowed)"
"$DRIFT_VENV/bin/pip" freeze --exclude-editable >"$DRIFT_VENV/freeze.txt"
"$DRIFT_VENV/bin/python" - "$DRIFT_VENV/freeze.txt" <<'PY'
import re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
def read(path):
    pairs = (line.strip().partition("==") for line in open(path))
    return {norm(n): v for n, _, v in pairs if v and not n.startswith("#")}
pinned, now = read("constraints.txt"), read(sys.argv[1])
moved = [f"  {n}: {pinned.get(n, 'unpinned')} -> {v}" for n, v in sorted(now.items()) if pinned.get(n) != v]
print("\n".join(moved) or "  none")
PY

if [[ $# -eq 0 ]]; then
    set -- -m "not slow"
fi
echo "== pytest $*"
HF_HUB_OFFLINE=1 "$DRIFT_VENV/bin/python" -m pytest -p no:cacheprovider "$@"
