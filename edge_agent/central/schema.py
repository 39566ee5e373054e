"""The central schema (module "central"): registry, records, chain state, anomalies, and the BI views."""

from __future__ import annotations

from edge_agent.central.db import Migration, register_migrations

GENESIS = "0" * 64

# Both dialects accept these types; SQLite maps them to its affinities. Times are epoch seconds.
_TABLES = [
    # One row per device: registry and the chain state the ingest workers share (locked per batch).
    """CREATE TABLE IF NOT EXISTS devices (
        device TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        pubkey TEXT NOT NULL,                 -- current key, raw Ed25519 public key, base64
        key_id TEXT NOT NULL,                 -- current key id (ed25519:...)
        status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
        revoked_at DOUBLE PRECISION,
        revoked_after_seq BIGINT,             -- records with a higher seq are refused
        added_at DOUBLE PRECISION NOT NULL,
        head_seq BIGINT NOT NULL DEFAULT 0,   -- highest seq stored
        verified_through BIGINT NOT NULL DEFAULT 0,  -- every seq <= this is stored or declared, links checked
        verified_hash TEXT NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000',
        last_seen DOUBLE PRECISION,           -- ingest time of the newest record
        last_ts TEXT,                         -- device time of the head record
        received BIGINT NOT NULL DEFAULT 0,   -- records stored
        duplicates BIGINT NOT NULL DEFAULT 0,
        checkpoint TEXT,                      -- latest signed checkpoint (JSON), verified
        checkpoint_seq BIGINT,
        checkpoint_at DOUBLE PRECISION
    )""",
    # Every key a device has signed with: the registered one and each announced by key_rotation.
    """CREATE TABLE IF NOT EXISTS device_keys (
        device TEXT NOT NULL REFERENCES devices(device),
        key_id TEXT NOT NULL,
        pubkey TEXT NOT NULL,
        from_seq BIGINT NOT NULL,             -- first seq this key may sign
        to_seq BIGINT,                        -- last seq (the rotation record's seq); NULL while current
        source TEXT NOT NULL,                 -- 'registered' or 'key_rotation:<seq>'
        added_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (device, key_id)
    )""",
    """CREATE TABLE IF NOT EXISTS records (
        device TEXT NOT NULL,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        prev TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts TEXT NOT NULL,
        key_id TEXT NOT NULL,
        record TEXT NOT NULL,                 -- the record's JSON exactly as received
        ingested_at DOUBLE PRECISION NOT NULL,
        verified INTEGER NOT NULL DEFAULT 0,  -- 1: signature, hash and the chain up to it checked
        PRIMARY KEY (device, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS records_kind_ts ON records (kind, ts)",
    "CREATE INDEX IF NOT EXISTS records_ingested ON records (ingested_at)",
    # Seqs a signed gap record says the device dropped, with the hash each had.
    """CREATE TABLE IF NOT EXISTS gap_declared (
        device TEXT NOT NULL,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        kind TEXT,
        gap_seq BIGINT NOT NULL,
        PRIMARY KEY (device, seq)
    )""",
    # Records signed by a key id not (yet) known: a rotation may still be on its way through another worker.
    """CREATE TABLE IF NOT EXISTS pending (
        device TEXT NOT NULL,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        key_id TEXT NOT NULL,
        record TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (device, seq, hash)
    )""",
]

_ANOMALIES_SQLITE = """CREATE TABLE IF NOT EXISTS anomalies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT,
    kind TEXT NOT NULL,
    seq BIGINT,
    dedupe TEXT NOT NULL UNIQUE,
    detected_at DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    resolved_at DOUBLE PRECISION
)"""
_ANOMALIES_PG = _ANOMALIES_SQLITE.replace("id INTEGER PRIMARY KEY AUTOINCREMENT", "id BIGSERIAL PRIMARY KEY")
_ANOMALY_INDEX = "CREATE INDEX IF NOT EXISTS anomalies_device ON anomalies (device, kind)"


def _view_sql(dialect: str) -> list[str]:
    """Trips and return inspections as plain columns for BI tools (Metabase, Superset, Excel over ODBC)."""

    def txt(path: str) -> str:
        if dialect == "sqlite":
            return f"json_extract(record, '$.{path}')"
        return "(record::jsonb #>> '{" + path.replace(".", ",") + "}')"

    def num(path: str) -> str:
        if dialect == "sqlite":
            return f"CAST(json_extract(record, '$.{path}') AS REAL)"
        return f"CAST({txt(path)} AS DOUBLE PRECISION)"

    def boolean(path: str) -> str:
        if dialect == "sqlite":
            return f"(json_extract(record, '$.{path}') = 1)"
        return f"(CAST({txt(path)} AS BOOLEAN))"

    def factor_source() -> str:
        if dialect == "sqlite":
            return "json_extract(record, '$.body.emission.factors[0].source')"
        return "(record::jsonb #>> '{body,emission,factors,0,source}')"

    ingested = "datetime(ingested_at, 'unixepoch')" if dialect == "sqlite" else "to_timestamp(ingested_at)"
    # S608: the view text is built from constant JSON paths, no input reaches it.
    trips = f"""CREATE VIEW trips AS SELECT
        device, seq,
        {txt("body.timestamp")} AS timestamp,
        {txt("body.transport_id")} AS transport_id,
        {txt("body.route")} AS route,
        {num("body.distance_km")} AS distance_km,
        {num("body.fuel_used_l")} AS fuel_used_l,
        {num("body.co2_kg")} AS co2_kg,
        {txt("body.co2_boundary")} AS co2_boundary,
        {txt("body.co2_gas")} AS co2_gas,
        {num("body.load_avg_kg")} AS load_avg_kg,
        {txt("body.load_source")} AS load_source,
        {txt("body.fuel_source")} AS fuel_source,
        {txt("body.emission.method")} AS emission_method,
        {factor_source()} AS factor_source,
        verified, {ingested} AS ingested_at
    FROM records WHERE kind = 'trip'"""
    reviewed = boolean("body.human_reviewed")
    inspections = f"""CREATE VIEW return_inspections AS SELECT
        device, seq, ts,
        {txt("body.fields.order_no")} AS order_no,
        {txt("body.fields.sku")} AS sku,
        CAST({txt("body.fields.quantity")} AS INTEGER) AS quantity,
        {txt("body.fields.reason")} AS reason,
        {txt("body.fields.customer_id")} AS customer_id,
        {txt("body.fields.return_date")} AS return_date,
        CASE WHEN {reviewed} THEN COALESCE({txt("body.decision")}, 'reviewed') ELSE 'accepted' END AS verdict,
        COALESCE({reviewed}, {"0" if dialect == "sqlite" else "FALSE"}) AS human_reviewed,
        verified, {ingested} AS ingested_at
    FROM records WHERE kind = 'return_inspection'"""
    return ["DROP VIEW IF EXISTS trips", trips, "DROP VIEW IF EXISTS return_inspections", inspections]


MIGRATIONS = [
    Migration(
        1,
        "registry, records, chain state, gaps, pending, anomalies",
        sqlite=[*_TABLES, _ANOMALIES_SQLITE, _ANOMALY_INDEX],
        postgresql=[*_TABLES, _ANOMALIES_PG, _ANOMALY_INDEX],
    ),
    Migration(2, "BI views: trips, return_inspections", sqlite=_view_sql("sqlite"), postgresql=_view_sql("postgresql")),
    Migration(
        3,
        "anomalies: severity, repeat count, last seen",
        sql=[
            "ALTER TABLE anomalies ADD COLUMN severity TEXT NOT NULL DEFAULT 'fail'",
            "ALTER TABLE anomalies ADD COLUMN count BIGINT NOT NULL DEFAULT 1",
            "ALTER TABLE anomalies ADD COLUMN last_at DOUBLE PRECISION",
            "CREATE INDEX IF NOT EXISTS anomalies_open ON anomalies (resolved_at, kind)",
        ],
    ),
]

MIGRATIONS.append(
    Migration(
        4,
        "gap_ranges: seq ranges a signed gap declares, with the end's hash when the gap gives it",
        sql=[
            """CREATE TABLE IF NOT EXISTS gap_ranges (
        device TEXT NOT NULL,
        first_seq BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        end_hash TEXT NOT NULL,
        gap_seq BIGINT NOT NULL,
        PRIMARY KEY (device, first_seq, gap_seq)
    )""",
        ],
    )
)

MIGRATIONS.append(
    Migration(
        5,
        "anomalies: when central last asked the device to resend a hole, and how often",
        sql=[
            "ALTER TABLE anomalies ADD COLUMN resend_at DOUBLE PRECISION",
            "ALTER TABLE anomalies ADD COLUMN resends BIGINT NOT NULL DEFAULT 0",
        ],
    )
)

MIGRATIONS.append(
    Migration(
        6,
        "trips view: co2_gas (CO2e, CO2 or 'CO2 + CO2e': what co2_kg counts)",
        sqlite=_view_sql("sqlite"),
        postgresql=_view_sql("postgresql"),
    )
)

register_migrations("central", MIGRATIONS)
