-- The recommendation task's tables (copersona rec), beside the generation tables in the same store file.
CREATE TABLE IF NOT EXISTS rec_items (
    item_id     TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    category    TEXT NOT NULL,
    description TEXT NOT NULL,
    summary     TEXT NOT NULL            -- s_i (Eq. 1); '' until the summaries stage ran
);
CREATE TABLE IF NOT EXISTS rec_interactions (
    user_id      TEXT NOT NULL,
    item_id      TEXT NOT NULL,
    timestamp    INTEGER NOT NULL,
    rating       REAL,
    review_title TEXT NOT NULL,
    text         TEXT NOT NULL,          -- '' when no review file holds this interaction
    split        TEXT NOT NULL CHECK (split IN ('train', 'validation', 'test')),
    position     INTEGER NOT NULL,       -- order in the user's history, oldest first
    PRIMARY KEY (user_id, item_id)
);
CREATE INDEX IF NOT EXISTS rec_interactions_by_item ON rec_interactions(item_id, split);
CREATE TABLE IF NOT EXISTS rec_aspects (
    user_id     TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    aspects     TEXT NOT NULL,           -- JSON AspectTuple
    informative INTEGER NOT NULL,        -- 0: more than 75% of slots empty (dropped from persona building)
    method      TEXT NOT NULL,           -- extractive | llm | llm-fallback
    PRIMARY KEY (user_id, item_id)
);
CREATE TABLE IF NOT EXISTS rec_persona_items (
    item_id TEXT PRIMARY KEY,            -- an item whose personas are built (possibly none: summary only)
    method  TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'   -- JSON: tuples used, k chosen, fallback
);
CREATE TABLE IF NOT EXISTS rec_personas (
    item_id TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    persona TEXT NOT NULL,               -- JSON Persona
    PRIMARY KEY (item_id, idx)
);
CREATE TABLE IF NOT EXISTS rec_alignments (
    user_id       TEXT NOT NULL,
    item_id       TEXT NOT NULL,
    persona_index INTEGER NOT NULL,
    justification TEXT NOT NULL,
    method        TEXT NOT NULL,
    PRIMARY KEY (user_id, item_id)
);
CREATE TABLE IF NOT EXISTS rec_candidates (
    generator TEXT NOT NULL,
    split     TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    items     TEXT NOT NULL,             -- JSON list, best first
    target    TEXT NOT NULL,
    PRIMARY KEY (generator, split, user_id)
);
CREATE TABLE IF NOT EXISTS rec_vectors (
    encoder TEXT NOT NULL,               -- the encoder's id: a model path, or a fine-tuned adapter's digest
    text_sha TEXT NOT NULL,              -- sha256 of the embedded text: a changed text is a new row
    vector  BLOB NOT NULL,               -- float32, L2-normalized
    PRIMARY KEY (encoder, text_sha)
)
;
CREATE TABLE IF NOT EXISTS rec_facets (
    user_id     TEXT NOT NULL,
    facet_key   TEXT NOT NULL,
    reliability TEXT NOT NULL CHECK (reliability IN ('none', 'weak', 'moderate', 'strong')),
    text        TEXT NOT NULL,           -- the facet text embedded (summary and quotes, or the placeholder)
    vector      BLOB NOT NULL,           -- float32, L2-normalized
    PRIMARY KEY (user_id, facet_key)
)
