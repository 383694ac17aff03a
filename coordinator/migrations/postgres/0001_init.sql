-- streamr-coordinator schema, Postgres. Times are Unix milliseconds, days are days since 1970-01-01 (UTC).
CREATE TABLE nodes (
    peer_id TEXT PRIMARY KEY NOT NULL,
    version TEXT NOT NULL,
    nickname TEXT NOT NULL,
    external_addrs TEXT NOT NULL,      -- JSON array of multiaddrs
    relay_addrs TEXT NOT NULL,         -- JSON array of multiaddrs
    reachability TEXT NOT NULL,
    upload_cap_kbps BIGINT NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    players BIGINT NOT NULL DEFAULT 0,
    peers BIGINT NOT NULL DEFAULT 0,
    streams_held TEXT NOT NULL DEFAULT '[]',
    claimed_bytes BIGINT NOT NULL DEFAULT 0,
    verified_bytes BIGINT NOT NULL DEFAULT 0,
    earnings DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX nodes_last_seen ON nodes (last_seen);

CREATE TABLE nonces (
    peer_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (peer_id, nonce)
);
CREATE INDEX nonces_seen_at ON nonces (seen_at);

CREATE TABLE rate_limits (
    key TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);

CREATE TABLE node_days (
    peer_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    online_ms BIGINT NOT NULL DEFAULT 0,
    claimed_bytes BIGINT NOT NULL DEFAULT 0,
    verified_bytes BIGINT NOT NULL DEFAULT 0,
    earnings DOUBLE PRECISION NOT NULL DEFAULT 0,
    rejected BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (peer_id, day)
);

CREATE TABLE receipt_series (
    provider TEXT NOT NULL,
    receiver TEXT NOT NULL,
    stream TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    counter BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (provider, receiver, stream, window_start)
);

CREATE TABLE streams (
    origin_peer TEXT NOT NULL,
    name TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    bitrate_kbps BIGINT NOT NULL,
    players BIGINT NOT NULL,
    PRIMARY KEY (origin_peer, name)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    viewer TEXT NOT NULL,
    stream TEXT NOT NULL,
    origin_peer TEXT,
    opened_at BIGINT NOT NULL,
    closed_at BIGINT,
    bytes_received BIGINT NOT NULL DEFAULT 0,
    close_reason TEXT
);
CREATE INDEX sessions_open_by_stream ON sessions (stream) WHERE closed_at IS NULL;
CREATE INDEX sessions_open_by_viewer ON sessions (viewer) WHERE closed_at IS NULL;

CREATE TABLE invites (
    code TEXT PRIMARY KEY NOT NULL,
    created_by TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX invites_expires_at ON invites (expires_at);

CREATE TABLE assignments (
    id TEXT PRIMARY KEY NOT NULL,
    node TEXT NOT NULL,
    stream_name TEXT NOT NULL,
    rtmp_url TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    stopped_at BIGINT
);
CREATE INDEX assignments_running ON assignments (node) WHERE stopped_at IS NULL;

CREATE TABLE settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
