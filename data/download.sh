#!/usr/bin/env bash
# Download the IMC 2024 competition data and the model weights into the layout imc_lib reads.
#
#   data/download.sh [--data-dir DIR] [--weights-dir DIR] [--skip-data] [--skip-weights] [--skip-dinov2]
#
#   --data-dir     (default data/imc-2024)  train/ test/ sample_submission.csv
#                  -> imc-lib run DIR --split test
#   --weights-dir  (default data/weights)   aliked-n16.pth aliked-n16rot.pth aliked_lightglue.pth
#                                           disk-depth-save.pth disk_lightglue.pth aliked-t16.pth
#                                           aliked-n32.pth xfeat.pt xfeat-lighterglue.pt dinov2-base/
#                  -> IMC_WEIGHTS_DIR=DIR, --dinov2 DIR/dinov2-base, imc-lib kaggle build --weights DIR
#   --skip-data, --skip-weights, --skip-dinov2: leave that part out (the official ALIKED, DISK, XFeat and
#                  LightGlue weights alone need no Kaggle account: --skip-data --skip-dinov2)
#
# Sources: the competition and the DINOv2 model (metaresearch/dinov2/pyTorch/base/1) through the
# Kaggle CLI, which needs credentials and the competition's rules accepted on kaggle.com; the
# ALIKED, DISK, XFeat and LightGlue weights from their official release URLs, checked against sha256 sums.
# Everything is checked first and downloaded into a temporary folder; only when every download
# succeeded is anything moved into place, so a failure changes nothing. Parts already in place are
# skipped. The competition data is about 10 GB.
set -euo pipefail

COMPETITION=image-matching-challenge-2024
DINOV2_MODEL=metaresearch/dinov2/pyTorch/base/1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
data_dir=$here/imc-2024
weights_dir=$here/weights
get_data=1
get_weights=1
get_dinov2=1

# file name in the weights folder, official URL, sha256
WEIGHTS=(
  "aliked-n16.pth https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n16.pth 5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2"
  "aliked-n16rot.pth https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n16rot.pth ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332"
  "aliked_lightglue.pth https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/aliked_lightglue.pth d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503"
  "disk-depth-save.pth https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth 9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe"
  "disk_lightglue.pth https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/disk_lightglue.pth b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335"
  "aliked-t16.pth https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-t16.pth 56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085"
  "aliked-n32.pth https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n32.pth 055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890"
  "xfeat.pt https://github.com/verlab/accelerated_features/raw/main/weights/xfeat.pt 0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b"
  "xfeat-lighterglue.pt https://github.com/verlab/accelerated_features/raw/main/weights/xfeat-lighterglue.pt 766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8"
)

die() {
  echo "data/download.sh: $*" >&2
  echo "data/download.sh: nothing was downloaded or changed." >&2
  exit 1
}

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case $1 in
    --data-dir) data_dir=${2:?--data-dir needs a folder}; shift 2 ;;
    --weights-dir) weights_dir=${2:?--weights-dir needs a folder}; shift 2 ;;
    --skip-data) get_data=0; shift ;;
    --skip-weights) get_weights=0; shift ;;
    --skip-dinov2) get_dinov2=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# What is missing.
need_data=0
if [ $get_data = 1 ]; then
  if [ -f "$data_dir/sample_submission.csv" ]; then
    echo "competition data already in $data_dir, skipping"
  elif [ -e "$data_dir" ] && [ -n "$(ls -A "$data_dir" 2>/dev/null)" ]; then
    die "$data_dir exists but holds no sample_submission.csv; remove it or pass another --data-dir"
  else
    need_data=1
  fi
fi
need_dinov2=0
missing_weights=()
if [ $get_weights = 1 ]; then
  if [ -f "$weights_dir/dinov2-base/config.json" ]; then
    echo "DINOv2 already in $weights_dir/dinov2-base, skipping"
  elif [ $get_dinov2 = 1 ]; then
    need_dinov2=1
  fi
  for entry in "${WEIGHTS[@]}"; do
    read -r name _ _ <<<"$entry"
    if [ -f "$weights_dir/$name" ]; then echo "$name already in $weights_dir, skipping"; else missing_weights+=("$entry"); fi
  done
fi
if [ $need_data = 0 ] && [ $need_dinov2 = 0 ] && [ ${#missing_weights[@]} = 0 ]; then
  echo "nothing to download"
  exit 0
fi

# Tools and credentials, before anything is written.
if [ $need_data = 1 ] || [ $need_dinov2 = 1 ]; then
  command -v kaggle >/dev/null 2>&1 ||
    die "the Kaggle CLI (kaggle) is not on PATH; install it with 'pip install kaggle'"
  config_dir=${KAGGLE_CONFIG_DIR:-$HOME/.kaggle}
  if [ -z "${KAGGLE_API_TOKEN:-}" ] && { [ -z "${KAGGLE_USERNAME:-}" ] || [ -z "${KAGGLE_KEY:-}" ]; } &&
     [ ! -f "$config_dir/kaggle.json" ] && [ ! -f "$config_dir/access_token" ] &&
     [ ! -f "$HOME/.kaggle/access_token" ] && [ ! -f "$HOME/.kaggle/credentials.json" ] &&
     [ ! -f "${XDG_CONFIG_HOME:-$HOME/.config}/kaggle/kaggle.json" ]; then
    die "no Kaggle credentials: create an API token at https://www.kaggle.com/settings (API section) and
  export KAGGLE_API_TOKEN=... or save it as ~/.kaggle/access_token (or a legacy ~/.kaggle/kaggle.json,
  chmod 600; or KAGGLE_USERNAME and KAGGLE_KEY); then accept the rules at
  https://www.kaggle.com/competitions/$COMPETITION/rules"
  fi
fi
for tool in unzip sha256sum tar; do
  command -v $tool >/dev/null 2>&1 || die "$tool is not installed (apt-get install $tool)"
done
if command -v curl >/dev/null 2>&1; then
  fetch() { curl -fsSL --retry 3 -o "$1" "$2"; }
  reachable() { curl -fsS --max-time 20 -o /dev/null -I "$1"; }
elif command -v wget >/dev/null 2>&1; then
  fetch() { wget -q --tries=3 -O "$1" "$2"; }
  reachable() { wget -q --timeout=20 --spider "$1"; }
else
  die "neither curl nor wget is installed"
fi
for site in https://www.kaggle.com https://github.com; do
  reachable "$site" || die "cannot reach $site: no network (or a proxy is needed)"
done

# Download into a temporary folder beside the data (same file system: the final moves are renames).
base=$(dirname "$data_dir")
[ -d "$base" ] || base=${TMPDIR:-/tmp}
tmp=$(mktemp -d "$base/.imc-download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [ $need_data = 1 ]; then
  echo "downloading the $COMPETITION data (about 10 GB) ..."
  kaggle competitions download -c "$COMPETITION" -p "$tmp/competition" ||
    die "kaggle competitions download failed (rules accepted at https://www.kaggle.com/competitions/$COMPETITION/rules?)"
  unzip -q "$tmp/competition/$COMPETITION.zip" -d "$tmp/imc-2024" || die "could not unzip $COMPETITION.zip"
  [ -f "$tmp/imc-2024/sample_submission.csv" ] || die "the competition archive holds no sample_submission.csv"
fi
if [ $need_dinov2 = 1 ]; then
  echo "downloading DINOv2 ($DINOV2_MODEL) ..."
  kaggle models instances versions download "$DINOV2_MODEL" -p "$tmp/dinov2-base" --untar ||
    die "kaggle models download of $DINOV2_MODEL failed"
  [ -f "$tmp/dinov2-base/config.json" ] || die "the DINOv2 archive holds no config.json"
fi
mkdir -p "$tmp/weights"
for entry in "${missing_weights[@]}"; do
  read -r name url sha <<<"$entry"
  echo "downloading $name ..."
  fetch "$tmp/weights/$name" "$url" || die "download of $url failed"
  echo "$sha  $tmp/weights/$name" | sha256sum -c --quiet - || die "$url: checksum mismatch (expected $sha)"
done

# Everything arrived: move it into place.
if [ $need_data = 1 ]; then
  mkdir -p "$(dirname "$data_dir")"
  rmdir "$data_dir" 2>/dev/null || true
  mv "$tmp/imc-2024" "$data_dir"
  echo "competition data in $data_dir"
fi
if [ $need_dinov2 = 1 ] || [ ${#missing_weights[@]} -gt 0 ]; then
  mkdir -p "$weights_dir"
  [ $need_dinov2 = 0 ] || mv "$tmp/dinov2-base" "$weights_dir/dinov2-base"
  for entry in "${missing_weights[@]}"; do
    read -r name _ _ <<<"$entry"
    mv "$tmp/weights/$name" "$weights_dir/$name"
  done
  echo "weights in $weights_dir"
fi
echo "use: IMC_WEIGHTS_DIR=$weights_dir imc-lib run $data_dir --split test --dinov2 $weights_dir/dinov2-base"
