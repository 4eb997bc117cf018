"""The workloads' tables: the tenants' files they read, search collections and documents, bulk batches
and media projects."""

from __future__ import annotations

import sqlalchemy as sa

from inferline.schema.columns import Json, Key, UTCDateTime, metadata

# Uploaded files: metadata per tenant; the bytes live once per sha256 in the blob store (files/blobs.py).
files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False),
    sa.Column("filename", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_files_tenant_id", "tenant", "id"),
    sa.Index("ix_files_sha256", "sha256"),
)

# Search collections, addressed by (tenant, name). `version` is bumped by every ingest and delete: it
# keys the search cache, so a cached result never outlives a change.
collections = sa.Table(
    "collections",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("fields", Json, nullable=False),
    sa.Column("embedding_model", sa.String(200), nullable=False),
    sa.Column("dim", sa.Integer(), nullable=False),
    sa.Column("chunk_tokens", sa.Integer(), nullable=False),
    sa.Column("overlap_tokens", sa.Integer(), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant", "name", name="uq_collections_tenant_name"),
)

# Documents of a collection; their bytes are a stored file (`file_id`), their chunks live in the index.
documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("collection_id", sa.String(36), nullable=False),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("external_id", sa.String(500), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("file_id", sa.String(36), nullable=False),
    sa.Column("filename", sa.String(500), nullable=True),
    sa.Column("content_type", sa.String(200), nullable=False),
    sa.Column("metadata", Json, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("job_id", Key(36), nullable=True),
    sa.Column("chunks", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("collection_id", "external_id", name="uq_documents_collection_external_id"),
    sa.Index("ix_documents_collection_id", "collection_id", "id"),
    sa.Index("ix_documents_collection_sha256", "collection_id", "sha256"),
)

# Bulk batches: records of an uploaded JSONL, CSV or Parquet file upserted as documents of a collection by their
# custom_id (batches/). `status` is the phase the batch job wrote; canceled and canceling are read from
# its job. The counts are those of the records done up to the job's last checkpoint.
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("collection", sa.String(100), nullable=False),
    sa.Column("input_file_id", sa.String(36), nullable=False),
    sa.Column("text_template", sa.Text(), nullable=True),
    sa.Column("id_field", sa.String(200), nullable=False),
    sa.Column("chunk_records", sa.Integer(), nullable=False),
    sa.Column("retry_of", sa.String(36), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("total", sa.Integer(), nullable=True),
    sa.Column("completed", sa.Integer(), nullable=False),
    sa.Column("failed", sa.Integer(), nullable=False),
    sa.Column("output_file_id", sa.String(36), nullable=True),
    sa.Column("error_file_id", sa.String(36), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("job_id", Key(36), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Index("ix_batches_tenant_id", "tenant", "id"),
    sa.Index("ix_batches_job_id", "job_id"),  # the retention of ended jobs keeps a batch's (migration 0019)
)

# One row per record of a batch done (by its line in the input): the document it became, or why not.
# The output and error files are written from them; a chunk redone after a crash replaces its rows.
batch_records = sa.Table(
    "batch_records",
    metadata,
    sa.Column("batch_id", sa.String(36), primary_key=True),
    sa.Column("line", sa.Integer(), primary_key=True),
    sa.Column("custom_id", sa.String(500), nullable=True),
    sa.Column("document_id", sa.String(36), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
)

# The files of the operator's drop folders that a scheduled batch took, one row each: a file is batched
# once (the same name, size and modification time is never taken again). `batch_id` is None for a file
# refused with `error` (not JSONL, CSV or Parquet, too large).
batch_drop_files = sa.Table(
    "batch_drop_files",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("folder", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
    sa.Column("file_id", sa.String(36), nullable=True),
    sa.Column("batch_id", sa.String(36), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("taken_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant", "folder", "name", "size", "mtime_ns", name="uq_batch_drop_files_file"),
)

# Media projects: a family's photos and song, and the video made of them. `active_job_id` is the job of
# the latest run (a `pipeline`); the project's status shown to users is derived from that job's.
media_projects = sa.Table(
    "media_projects",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("title", sa.String(100), nullable=True),
    sa.Column("subtitle", sa.String(200), nullable=True),
    sa.Column("settings", Json, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("active_job_id", Key(36), nullable=True),
    sa.Column("video_file_id", sa.String(36), nullable=True),
    sa.Column("poster_file_id", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_media_projects_tenant_id", "tenant", "id"),
    # The retention of ended jobs keeps a project's active job (migration 0019).
    sa.Index(
        "ix_media_projects_active_job_id",
        "active_job_id",
        postgresql_where=sa.text("active_job_id IS NOT NULL"),
        sqlite_where=sa.text("active_job_id IS NOT NULL"),
    ),
)

# A project's photos (kind image) and songs (kind audio), each a tenant file, played in `position` order.
media_assets = sa.Table(
    "media_assets",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("project_id", sa.String(36), nullable=False),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("file_id", sa.String(36), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("caption", sa.String(200), nullable=True),
    sa.Column("duration_s", sa.Float(), nullable=True),
    sa.Column("width", sa.Integer(), nullable=True),
    sa.Column("height", sa.Integer(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_media_assets_project_position", "project_id", "position"),
    sa.Index("ix_media_assets_file_id", "file_id"),
)
