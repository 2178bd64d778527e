#!/usr/bin/env bash
# The phantom's domain gap: a source-only model trained on one domain, scored on unseen
# subjects of the same domain and of the other domain. Usage: bash benchmarks/phantom_gap.sh [WORK]
set -euo pipefail
W=${1:-bench_work/phantom_gap}
ITERS=${ITERS:-600}
mpscl phantom --out "$W/train" --cases 8 --seed 0
mpscl phantom --out "$W/test" --cases 4 --seed 1   # other subjects
for part in train test; do for dom in mr ct; do
  [ -f "$W/prep/$part-$dom/manifest.json" ] || mpscl prepare --images "$W/$part/$dom/case{case}_image.nii.gz" \
    --labels "$W/$part/$dom/case{case}_label.nii.gz" --classes mmwhs --size 128 --out "$W/prep/$part-$dom" 2>/dev/null | tail -1
done; done
for src in mr ct; do
  trg=$([ $src = mr ] && echo ct || echo mr)
  mpscl train --source "$W/prep/train-$src" --target "$W/prep/train-$trg" --method source-only --preset cpu \
    --set train.iters=$ITERS --set train.threads=1 --out "$W/runs/$src-only" --no-progress
  for dom in mr ct; do
    mpscl evaluate --checkpoint "$W/runs/$src-only/final.pt" --data "$W/prep/test-$dom" --out "$W/eval/$src-only-on-$dom" 2>/dev/null | tail -1 | sed "s/^/$src-only on $dom: /"
  done
done
