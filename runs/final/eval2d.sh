#!/bin/bash
# usage: runs/final/eval2d.sh MODEL.onnx OUT.txt : the 2d-convention evaluate commands
cd /work/main
E=$1; O=$2; : > $O
export OMP_NUM_THREADS=1
L=".venv/bin/python -m lightmark"
for args in "--data ../shared/data/300w/afw" "--data ../shared/data/300w/afw --boxes predict_all" \
            "--data ../shared/data/300w/afw --boxes predict_all --detect-mirror" \
            "--data ../shared/data/300w/afw --flip" "--data ../shared/data/300w/afw --boxes predict_all --flip" \
            "--data ../shared/data/aflw2000_val --convention 2d"; do
  echo "== lightmark evaluate $args --model $E" >> $O
  $L evaluate $args --model $E --quiet 2>&1 | grep -v "^wrote" >> $O
done
cat $O
