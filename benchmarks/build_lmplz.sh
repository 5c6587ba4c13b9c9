#!/usr/bin/env bash
# KenLM's builder, lmplz, for benchmarks/ngram_peers.py, from the package registries alone: Boost's
# compiled libraries from the cmeel-boost wheel, KenLM's sources from its PyPI sdist (cmake and a C++
# compiler must be present). Prints lmplz's path; about 5 minutes on 2 cores.
#
#   PATH="$(dirname "$(benchmarks/build_lmplz.sh)"):$PATH" python benchmarks/ngram_peers.py
set -euo pipefail
DIR=${1:-$HOME/.cache/steer/lmplz}
mkdir -p "$DIR"
cd "$DIR"
if [ ! -x build/bin/lmplz ]; then
  pip download -q --no-deps --only-binary :all: cmeel-boost==1.90.0 -d . >&2
  unzip -qo cmeel_boost-1.90.0-*.whl 'cmeel.prefix/*'
  python - <<'EOF'
import hashlib, re, urllib.request
page = urllib.request.urlopen("https://pypi.org/simple/kenlm/", timeout=120).read().decode()
url, sha = re.search(r'href="([^"#]+/kenlm-0\.3\.0\.tar\.gz)#sha256=([0-9a-f]+)"', page).groups()
data = urllib.request.urlopen(url, timeout=300).read()
assert hashlib.sha256(data).hexdigest() == sha, "kenlm-0.3.0.tar.gz: checksum mismatch"
open("kenlm-0.3.0.tar.gz", "wb").write(data)
EOF
  tar xzf kenlm-0.3.0.tar.gz
  # Boost's System is header-only since 1.69 and 1.90 ships no library for it; KenLM's tests are not built.
  python - <<'EOF'
from pathlib import Path
p = Path("kenlm-0.3.0/CMakeLists.txt")
text = p.read_text()
p.write_text(text.replace("  program_options\n  system\n  thread\n  unit_test_framework\n", "  program_options\n  thread\n"))
EOF
  cmake -S kenlm-0.3.0 -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$DIR/cmeel.prefix" \
      -DBUILD_TESTING=OFF >&2
  cmake --build build --target lmplz -j2 >&2
fi
echo "$DIR/build/bin/lmplz"
