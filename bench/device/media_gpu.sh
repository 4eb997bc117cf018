#!/bin/bash
# The media workload's GPU checks, run on a lent GPU machine (the `device` tool) from the repository root:
#   NVENC through ffmpeg (the encoder choice of media/encoders.py) and the interpolation model on CUDA.
# That machine has no ffmpeg: .devcarry/ffb2.tar.xz is Debian's (bench/device/ffmpeg_bundle.sh), with its
# own libraries and loader. Writes its log to $OUT/media_gpu.log.
set -u
exec > >(tee "${OUT:-/tmp}/media_gpu.log") 2>&1
echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,encoder.stats.sessionCount --format=csv
nvidia-smi -q | grep -i -A3 "encoder stats" | head -8
echo "== driver libraries"
ldconfig -p | grep -E "libnvidia-encode|libnvcuvid|libcuda\.so" || echo "(none in ld.so.cache)"
ls /usr/local/nvidia/lib64 2>/dev/null | grep -E "encode|cuvid|libcuda" || echo "(no /usr/local/nvidia/lib64)"
echo "== ffmpeg"
python3 -c "import tarfile; tarfile.open('.devcarry/ffb2.tar.xz').extractall('/tmp', filter='tar')"
export EXTRA_LIB_PATH=/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu
export PATH=/tmp/ffb2:$PATH
ffmpeg -hide_banner -version | head -1
ffmpeg -hide_banner -encoders | grep -E "nvenc|libx264 "
echo "-- NVENC, four frames to nowhere:"
ffmpeg -hide_banner -loglevel verbose -f lavfi -i color=c=gray:s=256x144:r=25:d=0.2 -c:v h264_nvenc -frames:v 3 -f null - 2>&1 | grep -i -E "nvenc|cuda|error|fail" | head -12
echo "== the encoder media/encoders.py picks (auto), with its reason"
PYTHONPATH=src:.devcarry/site python3 - <<'PY'
import asyncio
from inferline.media.encoders import EncoderChoice
async def main():
    choice = EncoderChoice("auto")
    print("auto ->", (await choice.get()).name, "| reason:", choice.reason)
    try:
        print("h264_nvenc ->", (await EncoderChoice("h264_nvenc").get()).name)
    except Exception as exc:
        print("h264_nvenc ->", type(exc).__name__, str(exc)[:300])
asyncio.run(main())
PY
if ffmpeg -hide_banner -loglevel error -f lavfi -i color=c=gray:s=256x144:r=25:d=0.2 -c:v h264_nvenc -frames:v 3 -f null - 2>/dev/null; then
  echo "== NVENC works: a 10 s 1080p clip (zoompan over a test pattern), libx264 veryfast vs h264_nvenc p4"
  for enc in "libx264 -preset veryfast -crf 20" "h264_nvenc -preset p4 -tune hq -rc vbr -cq 21 -b:v 0"; do
    for run in 1 2; do
      TIMEFORMAT="${enc%% *} run $run: %R s wall, %U s user"
      time ffmpeg -hide_banner -loglevel error -f lavfi \
        -i testsrc2=s=1920x1080:r=30:d=10 -vf "zoompan=z='1+0.001*on':d=1:s=1920x1080,format=yuv420p" \
        -c:v $enc -profile:v high -pix_fmt yuv420p -f mp4 -y /tmp/x.mp4
    done
  done
fi
echo "== ONNX Runtime"
python3 -c "import onnxruntime as ort; print(ort.__version__, ort.get_available_providers())"
echo "-- the interpolation model (a tiny blend graph, as the tests build) set up for cuda:"
PYTHONPATH=src:.devcarry/site:. python3 - <<'PY'
import tempfile, time
from pathlib import Path
import numpy as np
from tests.media_helpers import make_model
from inferline.media.interpolation import FrameInterpolation
folder = make_model(Path(tempfile.mkdtemp()) / "model")
model = FrameInterpolation(str(folder))
model.setup("cuda")
print("providers:", model._session.get_providers())
pair = (np.zeros((1080, 1920, 3), np.uint8), np.full((1080, 1920, 3), 200, np.uint8))
model.predict_batch([pair] * 8)
start = time.perf_counter()
out = model.predict_batch([pair] * 8)
print("8 pairs at 1080p: %.3f s, middle value %d" % (time.perf_counter() - start, out[0][0, 0, 0]))
PY
echo "== done"
