"""media projects and their assets

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "media_projects",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=True),
        sa.Column("subtitle", sa.String(length=200), nullable=True),
        sa.Column("settings", Json, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("active_job_id", sa.String(length=36), nullable=True),
        sa.Column("video_file_id", sa.String(length=36), nullable=True),
        sa.Column("poster_file_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_media_projects_tenant_id", "media_projects", ["tenant", "id"])
    op.create_table(
        "media_assets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("caption", sa.String(length=200), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_media_assets_project_position", "media_assets", ["project_id", "position"])
    op.create_index("ix_media_assets_file_id", "media_assets", ["file_id"])


def downgrade() -> None:
    op.drop_index("ix_media_assets_file_id", table_name="media_assets")
    op.drop_index("ix_media_assets_project_position", table_name="media_assets")
    op.drop_table("media_assets")
    op.drop_index("ix_media_projects_tenant_id", table_name="media_projects")
    op.drop_table("media_projects")
