#!/usr/bin/env bash
# Regenerates the pictures of docs/pretraining.md, docs/dense.md, docs/results.md and docs/publishing.md from a
# main-job run (default: outputs/tiny-cpu, what the README's first command writes; run it with
# `training.eval_steps=150` for curves with evaluation points):
#   docs/images/scenes_preview.png                  the embedded scenes with tiny-cpu.yaml's scene options
#   docs/images/{pca,zeroshot}_scene_{1,2}.png       tips-visualize on two validation scenes (112 px, 8x8 patches)
#   docs/images/main_job_curves.png                 benchmarks/plot_metrics.py on the run's metrics.jsonl
#   docs/images/dpt_depth_scene.png                 a DPT depth head trained (LoRA, 300 steps, ~45 s) on the run's model
#   docs/images/demo_zeroshot.png                   the Gradio demo in headless Chromium (needs the demo extra)
#
#   bash benchmarks/readme_pictures.sh [RUN_DIR]
set -euo pipefail
RUN=${1:-outputs/tiny-cpu}
OUT=docs/images
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python - "$WORK" <<'EOF'
import sys
import yaml
from tips_hf.data import SpatialScenes, save_preview

data = yaml.safe_load(open("training/configs/tiny-cpu.yaml"))["data"]
options = dict(data["scene_options"], image_size=data["scene_image_size"])
save_preview("docs/images/scenes_preview.png", rows=2, cols=4, **options)
for name, size, index in (("scene_1", 112, 3), ("scene_2", 112, 7)):
    SpatialScenes("validation", index + 1, **{**options, "image_size": size})[index]["image"].save(f"{sys.argv[1]}/{name}.png")
SpatialScenes("validation", 4, **{**options, "image_size": 224})[3]["image"].save(f"{sys.argv[1]}/demo.png")
# The depth head is shown a validation scene of the kind it trained on (its config's scenes).
depth = yaml.safe_load(open("training/configs/finetune_depth_dpt_tiny.yaml"))["data"]
depth_options = dict(depth["scene_options"], image_size=depth["scene_image_size"])
SpatialScenes("validation", 4, **depth_options)[3]["image"].save(f"{sys.argv[1]}/depth_scene.png")
EOF

LABELS=(background circle square triangle star cross ring heart crescent)
for scene in scene_1 scene_2; do
  tips-visualize --model "$RUN/final" --image "$WORK/$scene.png" --out "$WORK" --size 112 --zero-shot-mode whole \
    --head synthetic --templates "a {}." "the {}" "{}" --labels "${LABELS[@]}"
  cp "$WORK/${scene}_pca.png" "$OUT/pca_${scene}.png"
  cp "$WORK/${scene}_zeroshot.png" "$OUT/zeroshot_${scene}.png"
done
python benchmarks/plot_metrics.py "$RUN/metrics.jsonl" --out "$OUT/main_job_curves.png"
python training/finetune.py --config training/configs/finetune_depth_dpt_tiny.yaml model.base="$RUN/final" \
  training.output_dir="$WORK/depth" > "$WORK/depth.log"
tips-visualize --depth "$WORK/depth/model" --image "$WORK/depth_scene.png" --out "$WORK"
cp "$WORK/depth_scene_depth.png" "$OUT/dpt_depth_scene.png"
python -m tips_hf.demo.browser --model "$RUN/final" --image "$WORK/demo.png" --labels circle star cross triangle \
  --screenshot "$OUT/demo_zeroshot.png"
