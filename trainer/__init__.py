"""The trainer that emits per-epoch checkpoints (issue 3). Nothing here yet."""
