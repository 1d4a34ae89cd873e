-- CoPersona store, schema version 4 (2 added soft_prompts and trained_models; 3 the evidence sources of facet states; 4 persona_db_units). One file holds every stage's records.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                 -- JSON
);
CREATE TABLE IF NOT EXISTS runs (
    run_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    stage    TEXT NOT NULL,
    started  REAL NOT NULL,
    finished REAL,
    status   TEXT NOT NULL,             -- running | done | failed
    details  TEXT NOT NULL DEFAULT '{}' -- JSON: counts, timings, config
);
CREATE TABLE IF NOT EXISTS interactions (
    user_id          TEXT NOT NULL,
    item_id          TEXT NOT NULL,
    timestamp        INTEGER NOT NULL,
    rating           REAL,
    review_title     TEXT NOT NULL,
    text             TEXT NOT NULL,
    item_title       TEXT NOT NULL,
    item_description TEXT NOT NULL,
    item_category    TEXT NOT NULL,
    heldout_rank     INTEGER,           -- NULL: profile; 0: test target; 1: validation; 2+: train
    PRIMARY KEY (user_id, item_id)
);
CREATE INDEX IF NOT EXISTS interactions_by_user ON interactions(user_id, timestamp);
CREATE TABLE IF NOT EXISTS facets (
    position INTEGER PRIMARY KEY,
    key      TEXT NOT NULL UNIQUE,
    facet    TEXT NOT NULL              -- JSON Facet
);
CREATE TABLE IF NOT EXISTS clusters (
    cluster_id INTEGER PRIMARY KEY,
    evidence   TEXT NOT NULL            -- JSON ClusterEvidence
);
CREATE TABLE IF NOT EXISTS profile_vectors (
    user_id TEXT PRIMARY KEY,
    vector  BLOB NOT NULL               -- float32, L2-normalized profile embedding
);
CREATE TABLE IF NOT EXISTS style_features (
    user_id  TEXT PRIMARY KEY,
    features BLOB NOT NULL              -- float64, App. C's writing-style vector of the profile
);
CREATE TABLE IF NOT EXISTS facet_states (
    user_id        TEXT NOT NULL,
    facet_key      TEXT NOT NULL,
    summary        TEXT NOT NULL,
    quotes         TEXT NOT NULL,       -- JSON list
    reliability    TEXT NOT NULL CHECK (reliability IN ('none', 'weak', 'moderate', 'strong')),
    method         TEXT NOT NULL,
    fallback       TEXT NOT NULL,
    dropped_quotes INTEGER NOT NULL,
    facet_text     TEXT NOT NULL,       -- what was embedded: [summary; quotes] or the placeholder
    placeholder    INTEGER NOT NULL,    -- 1 when facet_text is the neutral placeholder
    vector         BLOB NOT NULL,       -- float32, L2-normalized embedding of facet_text
    sources        TEXT NOT NULL DEFAULT '{}', -- JSON {"summary": [[item_id, timestamp], ...], "quotes": [...]}
    PRIMARY KEY (user_id, facet_key)
);
CREATE TABLE IF NOT EXISTS edges (
    facet_key  TEXT NOT NULL,
    source     TEXT NOT NULL,
    target     TEXT NOT NULL,
    similarity REAL NOT NULL,
    weight     REAL NOT NULL,
    rank       INTEGER NOT NULL,
    PRIMARY KEY (facet_key, source, target)
);
CREATE INDEX IF NOT EXISTS edges_by_source ON edges(source, facet_key, rank);
CREATE TABLE IF NOT EXISTS llm_cache (
    key               TEXT PRIMARY KEY, -- sha256 of model, messages, parameters and schema
    model             TEXT NOT NULL,
    request           TEXT NOT NULL,    -- JSON
    response          TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds           REAL NOT NULL,
    created           REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS soft_prompts (
    model_key TEXT NOT NULL,            -- TrainedModel.key: method@fingerprint
    user_id   TEXT NOT NULL,
    length    INTEGER NOT NULL,         -- virtual tokens L
    width     INTEGER NOT NULL,         -- the generator's hidden size H
    vector    BLOB NOT NULL,            -- float32, L x H, row-major
    PRIMARY KEY (model_key, user_id)
);
CREATE TABLE IF NOT EXISTS trained_models (
    method    TEXT PRIMARY KEY,         -- the model `evaluate` uses for this method
    model_key TEXT NOT NULL,
    path      TEXT NOT NULL,            -- the training folder (model.json, adapter/)
    created   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS persona_db_units (
    user_id  TEXT NOT NULL,
    profile  TEXT NOT NULL,             -- digest of the refiner and the profile reviews the units rest on
    level    TEXT NOT NULL CHECK (level IN ('cache', 'induced', 'distilled')),
    position INTEGER NOT NULL,
    unit     TEXT NOT NULL,             -- JSON PersonaUnit: text, sources, how it was made
    vector   BLOB NOT NULL,             -- float32, L2-normalized embedding of the unit's text
    PRIMARY KEY (user_id, profile, level, position)
);
CREATE TABLE IF NOT EXISTS method_models (
    method  TEXT NOT NULL,              -- the harness method whose offline preparation trained it
    key     TEXT NOT NULL,              -- digest of its settings and the training data it saw
    payload BLOB NOT NULL,              -- the method's own serialization (torch state dict)
    created REAL NOT NULL,
    PRIMARY KEY (method, key)
);
