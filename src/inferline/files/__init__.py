"""Uploaded files: content-addressed blobs under the data dir, metadata per tenant."""
