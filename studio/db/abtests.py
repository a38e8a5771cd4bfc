"""Session-first crud for blind A/B tests: the test, its pairs (one per prompt and seed) and listeners' votes."""
from __future__ import annotations

from sqlmodel import Session, col, delete, select

from studio.db.engine import for_update
from studio.db.models import ABPair, ABTest, ABVote, Job, Rating, Score
from studio.db.recovery import claim_unowned, mine


def create_test(session: Session, test: ABTest, pairs: list[tuple[str, int]]) -> ABTest:
    """Record a test and its (prompt, seed) pairs, all or none."""
    session.add(test)
    session.flush()
    session.add_all(ABPair(abtest_id=test.id, position=i, prompt=prompt, seed=seed)
                    for i, (prompt, seed) in enumerate(pairs))
    session.commit()
    session.refresh(test)
    return test


def get_test(session: Session, test_id: int) -> ABTest | None:
    return session.get(ABTest, test_id)


def list_tests(session: Session, limit: int = 50, offset: int = 0) -> list[ABTest]:
    stmt = select(ABTest).order_by(col(ABTest.id).desc()).offset(offset).limit(limit)
    return list(session.exec(stmt))


def lock_test(session: Session, test_id: int) -> ABTest | None:
    """The test, its row locked until the transaction ends (db.engine.for_update: first in the session)."""
    return session.exec(for_update(session, select(ABTest).where(ABTest.id == test_id))).first()


def tests_with_status(session: Session, status: str, runner: str | None = None) -> list[ABTest]:
    """runner: this studio's own tests only (and those no studio owns, which it takes)."""
    claim_unowned(session, ABTest, runner, status)
    return list(session.exec(select(ABTest).where(ABTest.status == status, mine(ABTest.runner, runner))
                             .order_by(ABTest.id)))


def pairs_of(session: Session, test_id: int) -> list[ABPair]:
    return list(session.exec(select(ABPair).where(ABPair.abtest_id == test_id).order_by(ABPair.position)))


def votes_of(session: Session, test_id: int, listener: str | None = None) -> list[ABVote]:
    stmt = select(ABVote).where(ABVote.abtest_id == test_id)
    if listener is not None:
        stmt = stmt.where(ABVote.listener == listener)
    return list(session.exec(stmt.order_by(ABVote.id)))


def jobs_of(session: Session, test_id: int) -> list[Job]:
    return list(session.exec(select(Job).where(Job.abtest_id == test_id)))


def delete_test(session: Session, test: ABTest) -> None:
    """The test, its votes and pairs, its clips' jobs and what refers to them (scores, ratings), in one commit."""
    job_ids = [j.id for j in jobs_of(session, test.id)]
    session.exec(delete(ABVote).where(ABVote.abtest_id == test.id))
    session.exec(delete(ABPair).where(ABPair.abtest_id == test.id))
    if job_ids:
        session.exec(delete(Score).where(col(Score.job_id).in_(job_ids)))
        session.exec(delete(Rating).where(col(Rating.job_id).in_(job_ids)))
        session.exec(delete(Job).where(col(Job.id).in_(job_ids)))
    session.delete(test)
    session.commit()
