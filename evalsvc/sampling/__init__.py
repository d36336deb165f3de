"""Grid planning and fast, paired, resumable sampling with the deployment (diffusers) pipeline."""
