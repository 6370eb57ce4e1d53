#!/usr/bin/env bash
# The installable package, as a user gets it: build the sdist and the wheel
# (`python -m build`), install the wheel with no extras into a fresh virtualenv
# and, from there, run `meerkat-runtime --version`, the demo and the public-API
# import check (scripts/check_public_api.py). The core must work on SQLite
# without psycopg, starlette or opentelemetry; the wheel must ship the console's
# templates. Called by .ci/run; usage: scripts/check-wheel.sh [PYTHON]
# (PYTHON: an interpreter with the `build` package; default .venv/bin/python).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/meerkat-wheel-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "check-wheel: building the sdist and the wheel"
"$PYTHON" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || {
    cat "$WORK/build.log" >&2
    echo "check-wheel: python -m build failed" >&2
    exit 1
}
wheel=("$WORK"/dist/meerkat_runtime-*.whl)
sdist=("$WORK"/dist/meerkat_runtime-*.tar.gz)
[[ -f "${wheel[0]}" && -f "${sdist[0]}" ]] || { echo "check-wheel: no wheel or sdist built" >&2; exit 1; }
echo "check-wheel: built $(basename "${sdist[0]}") and $(basename "${wheel[0]}")"

# The package data the console needs, in both archives.
"$PYTHON" - "${wheel[0]}" "${sdist[0]}" <<'PY'
import sys, tarfile, zipfile
wheel, sdist = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
needed = ["meerkat_runtime/py.typed", "meerkat_runtime/console/templates/base.html"]
missing = [n for n in needed if n not in names]
with tarfile.open(sdist) as tar:
    snames = [m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name]
missing += [f"sdist:{n}" for n in needed if n not in snames]
if missing:
    sys.exit(f"check-wheel: missing from the archives: {missing}")
print(f"check-wheel: the wheel holds {len(names)} files, the console templates among them")
PY

echo "check-wheel: installing the wheel (no extras) into a fresh virtualenv"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --disable-pip-version-check "${wheel[0]}" 2>&1 | grep -v "is ignored" >&2 || true
"$WORK/venv/bin/python" -c 'import meerkat_runtime' || { echo "check-wheel: the wheel did not install" >&2; exit 1; }
for absent in psycopg starlette opentelemetry; do
    if "$WORK/venv/bin/python" -c "import $absent" 2>/dev/null; then
        echo "check-wheel: $absent was installed without its extra" >&2
        exit 1
    fi
done

# Run from elsewhere, so nothing is imported from this checkout.
cd "$WORK"
version="$("$WORK/venv/bin/meerkat-runtime" --version)"
echo "check-wheel: $version"
[[ "$version" =~ ^meerkat-runtime\ [0-9]+\.[0-9]+\.[0-9]+ ]] || { echo "check-wheel: bad --version output" >&2; exit 1; }
"$WORK/venv/bin/python" "$OLDPWD/scripts/check_public_api.py"
echo "check-wheel: meerkat-runtime demo (from the installed wheel)"
"$WORK/venv/bin/meerkat-runtime" demo --store "sqlite:///$WORK/demo.db" --json >"$WORK/demo.json"
"$WORK/venv/bin/python" - "$WORK/demo.json" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
if not result.get("ok"):
    sys.exit(f"check-wheel: the demo failed: {result}")
print(f"check-wheel: demo ok ({result['accepted']} inputs accepted, {result['events']} events, verify ok)")
PY
echo "check-wheel: ok"
