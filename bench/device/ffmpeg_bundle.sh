#!/bin/bash
# Debian's ffmpeg and ffprobe with their own libraries and loader, packed for the device tool's machine
# (which has no ffmpeg and cannot install one): .devcarry/ffb2.tar.xz, ~29 MB. Run here after ./dev has
# installed ffmpeg; then `run` bench/device/media_gpu.sh with carry [".devcarry"].
# The libraries of codecs and filters the media workload never uses are replaced by stand-ins
# (stub_library.py) to fit the 64 MiB the tool carries; libaom, libvpx and libx265 stay real: ffmpeg calls
# them when it lists its codecs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bundle=$work/ffb2
mkdir -p "$bundle/lib" "$work/stubs"
cp /usr/bin/ffmpeg "$bundle/ffmpeg.bin"
cp /usr/bin/ffprobe "$bundle/ffprobe.bin"
STANDINS="libicudata.so.72 libcodec2.so.1.0 librsvg-2.so.2 libsphinxbase.so.3 libpocketsphinx.so.3 liblapack.so.3
libplacebo.so.208 libflite.so.1 libflite_cmu_us_kal16.so.1 libflite_cmu_us_rms.so.1 libflite_cmu_us_slt.so.1
libflite_cmu_us_awb.so.1 libflite_cmu_us_kal.so.1 libflite_usenglish.so.1 libflite_cmulex.so.1 libSvtAv1Enc.so.1
libSDL2-2.0.so.0 librabbitmq.so.4 libjxl.so.0.7 libpulse.so.0 libzmq.so.5 libjack.so.0 libopenmpt.so.0
librav1e.so.0 libcaca.so.0"
# The libraries ffmpeg and ffprobe load, through the stand-ins' names but not what those need.
python3 - "$bundle" $STANDINS <<'PY'
import re, shutil, subprocess, sys
from pathlib import Path
bundle, standins = Path(sys.argv[1]), set(sys.argv[2:])
def resolved(binary):
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    return {m.group(1): Path(m.group(2)) for m in re.finditer(r"^\s*(\S+) => (/\S+)", out, re.M)}
paths = resolved("/usr/bin/ffmpeg") | resolved("/usr/bin/ffprobe")
def needed(path):
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)
keep, todo = set(), [n for b in ("/usr/bin/ffmpeg", "/usr/bin/ffprobe") for n in needed(b)]
while todo:
    name = todo.pop()
    if name in keep:
        continue
    keep.add(name)
    if name not in standins and name in paths:
        todo += needed(paths[name])
for name in sorted(keep - standins):
    if name in paths:
        shutil.copy(paths[name], bundle / "lib" / name)
print(f"{len(keep - standins)} libraries, {len(keep & standins)} stand-ins")
PY
for name in $STANDINS; do
  real=$(ldconfig -p | awk -v n="$name" '$1 == n {print $NF; exit}')
  if [ -n "$real" ] && [ ! -e "$bundle/lib/$name" ]; then
    python3 "$here/stub_library.py" "$real" "$work/stubs"
    cp "$work/stubs/$name" "$bundle/lib/"
  fi
done
cp -L /lib64/ld-linux-x86-64.so.2 "$bundle/lib/"
cat > "$bundle/run.sh" <<'SH'
#!/bin/sh
# ffmpeg or ffprobe (by the name it is called by) with the libraries beside it; EXTRA_LIB_PATH: the driver's.
here=$(dirname "$(readlink -f "$0")")
exec "$here/lib/ld-linux-x86-64.so.2" --library-path "$here/lib:${EXTRA_LIB_PATH:-}" "$here/$(basename "$0").bin" "$@"
SH
chmod +x "$bundle/run.sh"
ln -s run.sh "$bundle/ffmpeg"
ln -s run.sh "$bundle/ffprobe"
"$bundle/ffmpeg" -hide_banner -loglevel error -f lavfi -i testsrc2=s=320x180:r=30:d=1 -c:v libx264 -f null -
mkdir -p "$root/.devcarry"
tar cf - -C "$work" ffb2 | xz -9 -T2 > "$root/.devcarry/ffb2.tar.xz"
ls -la "$root/.devcarry/ffb2.tar.xz"
