"""Public items: their own numbers, and the credit the request chose

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 18:05:00

Already released requests get public numbers in the order they were released and stay
anonymous (no credit line), as they were shown before.
"""
from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('public_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('credit', sa.String(length=16),
                                      server_default='anonymous', nullable=False))
        batch_op.add_column(sa.Column('public_credit', sa.String(length=400),
                                      server_default='', nullable=False))
        batch_op.create_unique_constraint(batch_op.f('uq_review_requests_public_id'),
                                          ['public_id'])
    requests = sa.table('review_requests', sa.column('id', sa.Integer()),
                        sa.column('kind', sa.String()), sa.column('state', sa.String()),
                        sa.column('released_at', sa.DateTime(timezone=True)),
                        sa.column('public_id', sa.Integer()))
    conn = op.get_bind()
    released = conn.execute(
        sa.select(requests.c.id)
        .where(requests.c.kind == 'publication', requests.c.state == 'released')
        .order_by(requests.c.released_at, requests.c.id)).scalars().all()
    for number, request_id in enumerate(released, 1):
        conn.execute(sa.update(requests).where(requests.c.id == request_id)
                     .values(public_id=number))


def downgrade() -> None:
    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_review_requests_public_id'), type_='unique')
        batch_op.drop_column('public_credit')
        batch_op.drop_column('credit')
        batch_op.drop_column('public_id')
