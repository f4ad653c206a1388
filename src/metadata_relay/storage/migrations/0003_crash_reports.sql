-- Crash reports mydia sends (POST /crashes/report), read by operators with
-- `metadata-relay crashes ...`; never served over HTTP. Kept by count and age
-- (CRASH_REPORTS_MAX, CRASH_REPORTS_MAX_AGE_DAYS).
CREATE TABLE crash_reports (
    id            INTEGER PRIMARY KEY,
    received_at   REAL NOT NULL,
    error_type    TEXT NOT NULL,
    error_message TEXT NOT NULL,
    stacktrace    TEXT NOT NULL,             -- JSON list of frames, as sent
    version       TEXT,
    environment   TEXT,
    occurred_at   TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}', -- JSON object, as sent
    size          INTEGER NOT NULL           -- bytes of the report as received
);
CREATE INDEX crash_reports_received ON crash_reports(received_at);
CREATE INDEX crash_reports_type ON crash_reports(error_type, id);
