"""The model runtime: one contract for every model, and a dynamic batcher shared by all jobs."""
