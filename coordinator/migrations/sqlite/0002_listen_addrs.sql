-- Addresses a node listens on (JSON array of multiaddrs), handed out while a young network has too few
-- public nodes for newcomers to join through.
ALTER TABLE nodes ADD COLUMN listen_addrs TEXT NOT NULL DEFAULT '[]';
