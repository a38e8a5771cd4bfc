"""Rows written straight into a studio database for adapter-metrics tests: adapters, generations and their ratings,
A/B tests with pairs and votes, evaluation runs with their scored clips. Every figure the tests expect is
recomputed by hand from the values below."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlmodel import Session

from studio.db.models import ABPair, ABTest, ABVote, Adapter, Evaluation, Job, Rating, Score

MODEL = "studio-tiny"
SCORER = "clap-tiny"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class Seeder:
    session: Session
    clock: itertools.count = field(default_factory=itertools.count)

    def _at(self) -> datetime:
        return T0 + timedelta(minutes=next(self.clock))

    def _add(self, row):
        self.session.add(row)
        self.session.commit()
        self.session.refresh(row)
        return row

    def adapter(self, name: str, version: int, *, base: str = MODEL, deleted: bool = False, **fields) -> Adapter:
        return self._add(Adapter(name=name, version=version, base_model=base, path=f"adapters/{name}-{version}",
                                 source="test", created_at=self._at(), deleted_at=self._at() if deleted else None,
                                 active=not deleted, **fields))

    def job(self, prompt: str, adapter: Adapter | None = None, *, model: str = MODEL, status: str = "succeeded",
            seed: int = 0, ratings: dict[str, int] | None = None, **fields) -> Job:
        job = self._add(Job(prompt=prompt, model_id=model, seed=seed, duration_s=1.0, sample_rate=32000,
                            status=status, adapter_id=adapter.id if adapter else None, created_at=self._at(),
                            **fields))
        for user, stars in (ratings or {}).items():
            self._add(Rating(job_id=job.id, user=user, stars=stars))
        return job

    def abtest(self, name: str, side_a: Adapter | None, side_b: Adapter | None, votes: dict[str, int], *,
               closed: bool = True, overrides_a: dict | None = None, overrides_b: dict | None = None) -> ABTest:
        """A test with one pair per vote (each voted by one listener): votes = {'a': n, 'b': n, 'none': n}."""
        test = self._add(ABTest(
            name=name, model_id=MODEL, seeds_per_prompt=1, duration_s=1.0, secret="s", status="ready",
            side_a={"adapter_id": side_a.id if side_a else None, "overrides": overrides_a or {}},
            side_b={"adapter_id": side_b.id if side_b else None, "overrides": overrides_b or {}},
            prompts=["p"], created_at=self._at(), closed_at=self._at() if closed else None))
        position = 0
        for choice, n in votes.items():
            for _ in range(n):
                pair = self._add(ABPair(abtest_id=test.id, position=position, prompt="p", seed=position))
                self._add(ABVote(abtest_id=test.id, pair_id=pair.id, listener=f"listener{position % 3}",
                                 choice=choice))
                position += 1
        return test

    def evaluation(self, adapter: Adapter | None, prompts: list[str], seeds: list[int], scores: list[float], *,
                   status: str = "succeeded", scorer: str = SCORER) -> Evaluation:
        """A run with one clip job per (prompt, seed), prompt-major, scored in that order."""
        run = self._add(Evaluation(model_id=MODEL, adapter_id=adapter.id if adapter else None, scorer=scorer,
                                   prompts=prompts, seeds=seeds, duration_s=1.0, status=status,
                                   mean_score=sum(scores) / len(scores) if scores else None, n=len(scores),
                                   created_at=self._at(), finished_at=self._at()))
        for (prompt, seed), value in zip(itertools.product(prompts, seeds), scores):
            clip = self.job(prompt, adapter, seed=seed, evaluation_id=run.id)
            self._add(Score(job_id=clip.id, scorer=scorer, value=value))
        return run
