"""Files that change what a loaded model computes without being a checkpoint: textual-inversion embeddings
(and, later, LoRA/LyCORIS). Discovery reads headers only; applying them is the conditioning's and the
patcher's job."""
