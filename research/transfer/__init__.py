"""Transfer learning: pretrained weights (safe torch-free reader), parameter
surgery (new head) and optimizer partitions (freezing, layer-wise LR)."""
