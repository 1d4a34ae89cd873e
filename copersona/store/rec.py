"""The recommendation task's records in a CoPersona store (``copersona rec``).

The same file, WAL mode, transactions, run log and LLM cache as :class:`Store`; these tables are
created when a store is opened for writing, so a generation store can also hold a rec index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from copersona.data.records import Interaction
from copersona.rec.records import Alignment, AspectTuple, Candidates, Persona, RecItem, RecSplit
from copersona.store.store import Store, StoreError, _blob, upsert

# Each rec table's columns (in the schema's order) and primary key, for its replacing insert.
_REC_TABLES = {
    "rec_interactions": (
        ("user_id", "item_id", "timestamp", "rating", "review_title", "text", "split", "position"),
        ("user_id", "item_id"),
    ),
    "rec_items": (("item_id", "title", "category", "description", "summary"), ("item_id",)),
    "rec_aspects": (("user_id", "item_id", "aspects", "informative", "method"), ("user_id", "item_id")),
    "rec_persona_items": (("item_id", "method", "details"), ("item_id",)),
    "rec_alignments": (("user_id", "item_id", "persona_index", "justification", "method"), ("user_id", "item_id")),
    "rec_facets": (("user_id", "facet_key", "reliability", "text", "vector"), ("user_id", "facet_key")),
    "rec_candidates": (("generator", "split", "user_id", "items", "target"), ("generator", "split", "user_id")),
    "rec_vectors": (("encoder", "text_sha", "vector"), ("encoder", "text_sha")),
}


def _upsert(table: str) -> str:
    return upsert(table, *_REC_TABLES[table])


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RecStore(Store):
    """Typed access to the rec tables."""

    def __init__(self, path: str | Path, *, read_only: bool = False, create: bool = True):
        super().__init__(path, read_only=read_only, create=create)
        if read_only:
            if "rec_interactions" not in self._db.tables():
                self.close()
                raise StoreError(f"{self.path}: no recommendation index (`copersona rec index` makes one)")
            return
        with self.transaction():
            self.run_schema_script("rec_schema.sql")

    def __enter__(self) -> RecStore:
        return self

    # -- interactions and items --------------------------------------------------------------
    def write_interactions(self, interactions: list[Interaction], splits: list[RecSplit]) -> int:
        rows, position = [], {}
        for interaction, split in zip(interactions, splits):
            at = position.get(interaction.user_id, 0)
            position[interaction.user_id] = at + 1
            rows.append(
                (
                    interaction.user_id,
                    interaction.item_id,
                    interaction.timestamp,
                    interaction.rating,
                    interaction.review_title,
                    interaction.text,
                    split,
                    at,
                )
            )
        with self.transaction():
            self._db.executemany(_upsert("rec_interactions"), rows)
        return len(rows)

    def rec_interactions(self, split: RecSplit | None = None) -> list[tuple[Interaction, RecSplit]]:
        """Interactions (with their item's metadata) and splits, by user and time."""
        where = " WHERE r.split = ?" if split else ""
        rows = self._db.execute(
            "SELECT r.user_id, r.item_id, r.timestamp, r.rating, r.review_title, r.text, r.split, "
            "i.title, i.description, i.category FROM rec_interactions r JOIN rec_items i USING (item_id)"
            f"{where} ORDER BY r.user_id, r.position",
            (split,) if split else (),
        )
        return [
            (
                Interaction(
                    user_id=r[0],
                    item_id=r[1],
                    timestamp=r[2],
                    rating=r[3],
                    review_title=r[4],
                    text=r[5],
                    item_title=r[7],
                    item_description=r[8],
                    item_category=r[9],
                ),
                r[6],
            )
            for r in rows
        ]

    def write_items(self, items: Iterable[RecItem]) -> None:
        with self.transaction():
            self._db.executemany(
                _upsert("rec_items"),
                [(i.item_id, i.title, i.category, i.description, i.summary) for i in items],
            )

    def items(self) -> dict[str, RecItem]:
        rows = self._db.execute("SELECT item_id, title, category, description, summary FROM rec_items ORDER BY item_id")
        return {r[0]: RecItem(item_id=r[0], title=r[1], category=r[2], description=r[3], summary=r[4]) for r in rows}

    # -- aspects, personas, alignments -------------------------------------------------------
    def write_aspects(self, rows: Iterable[tuple[str, str, AspectTuple, str]]) -> None:
        with self.transaction():
            self._db.executemany(
                _upsert("rec_aspects"),
                [(u, i, a.model_dump_json(), int(a.informative()), method) for u, i, a, method in rows],
            )

    def aspects(self) -> dict[tuple[str, str], AspectTuple]:
        rows = self._db.execute("SELECT user_id, item_id, aspects FROM rec_aspects")
        return {(r[0], r[1]): AspectTuple.model_validate_json(r[2]) for r in rows}

    def aspect_methods(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT method, COUNT(*) FROM rec_aspects GROUP BY method").fetchall())

    def write_personas(self, item_id: str, personas: list[Persona], method: str, details: dict) -> None:
        """An item's personas (none: the item is indexed by its summary), replacing earlier ones (and the
        alignments that pointed at them)."""
        with self.transaction():
            self._db.execute("DELETE FROM rec_personas WHERE item_id = ?", (item_id,))
            self._db.execute("DELETE FROM rec_alignments WHERE item_id = ?", (item_id,))
            self._db.executemany(
                "INSERT INTO rec_personas VALUES (?, ?, ?)",
                [(item_id, p.index, p.model_dump_json()) for p in personas],
            )
            self._db.execute(_upsert("rec_persona_items"), (item_id, method, json.dumps(details)))

    def items_with_personas_built(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT item_id FROM rec_persona_items")}

    def personas(self) -> dict[str, list[Persona]]:
        out: dict[str, list[Persona]] = {}
        for (raw,) in self._db.execute("SELECT persona FROM rec_personas ORDER BY item_id, idx"):
            persona = Persona.model_validate_json(raw)
            out.setdefault(persona.item_id, []).append(persona)
        return out

    def persona_details(self) -> dict[str, dict]:
        rows = self._db.execute("SELECT item_id, method, details FROM rec_persona_items")
        return {r[0]: {"method": r[1], **json.loads(r[2])} for r in rows}

    def write_alignments(self, alignments: Iterable[Alignment]) -> None:
        with self.transaction():
            self._db.executemany(
                _upsert("rec_alignments"),
                [(a.user_id, a.item_id, a.persona_index, a.justification, a.method) for a in alignments],
            )

    def alignments(self) -> list[Alignment]:
        rows = self._db.execute(
            "SELECT user_id, item_id, persona_index, justification, method FROM rec_alignments "
            "ORDER BY user_id, item_id"
        )
        return [
            Alignment(user_id=r[0], item_id=r[1], persona_index=r[2], justification=r[3], method=r[4]) for r in rows
        ]

    # -- CoPersona facets of rec users -------------------------------------------------------
    def write_facets(self, rows: Iterable[tuple[str, str, str, str, np.ndarray]]) -> None:
        """(user, facet key, reliability, facet text, vector) rows."""
        with self.transaction():
            self._db.executemany(
                _upsert("rec_facets"),
                [(u, f, r, t, _blob(v)) for u, f, r, t, v in rows],
            )

    def users_with_facets(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT DISTINCT user_id FROM rec_facets")}

    def facets(self) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        """Users, facet keys, reliabilities (users x facets, str) and vectors (users x facets x dim)."""
        rows = self._db.execute(
            "SELECT user_id, facet_key, reliability, vector FROM rec_facets ORDER BY user_id, facet_key"
        )
        by_user: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
        for user, key, reliability, blob in rows:
            by_user.setdefault(user, {})[key] = (reliability, np.frombuffer(blob, dtype=np.float32))
        users = sorted(by_user)
        keys = sorted({k for facets in by_user.values() for k in facets})
        if not users:
            return [], [], np.zeros((0, 0), dtype=str), np.zeros((0, 0, 0), dtype=np.float32)
        labels = np.array([[by_user[u][k][0] for k in keys] for u in users])
        vectors = np.stack([np.stack([by_user[u][k][1] for k in keys]) for u in users])
        return users, keys, labels, vectors

    # -- candidates --------------------------------------------------------------------------
    def write_candidates(self, rows: Iterable[Candidates]) -> None:
        with self.transaction():
            self._db.executemany(
                _upsert("rec_candidates"),
                [(c.generator, c.split, c.user_id, json.dumps(c.items), c.target) for c in rows],
            )

    def candidates(self, generator: str, split: RecSplit) -> list[Candidates]:
        rows = self._db.execute(
            "SELECT user_id, items, target FROM rec_candidates WHERE generator = ? AND split = ? ORDER BY user_id",
            (generator, split),
        )
        return [
            Candidates(generator=generator, split=split, user_id=r[0], items=json.loads(r[1]), target=r[2])
            for r in rows
        ]

    def generators(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT generator FROM rec_candidates ORDER BY generator")]

    # -- embedding cache ---------------------------------------------------------------------
    def vectors(self, encoder: str, texts: list[str]) -> dict[str, np.ndarray]:
        """Stored embeddings of ``texts`` by this encoder, by text digest (missing ones are absent)."""
        digests = list({text_digest(t) for t in texts})
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(digests), 500):
            chunk = digests[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT text_sha, vector FROM rec_vectors WHERE encoder = ? AND text_sha IN ({marks})",
                (encoder, *chunk),
            )
            found.update({r[0]: np.frombuffer(r[1], dtype=np.float32) for r in rows})
        return found

    def write_vectors(self, encoder: str, texts: list[str], vectors: np.ndarray) -> None:
        with self.transaction():
            self._db.executemany(
                _upsert("rec_vectors"),
                [(encoder, text_digest(t), _blob(v)) for t, v in zip(texts, vectors)],
            )
