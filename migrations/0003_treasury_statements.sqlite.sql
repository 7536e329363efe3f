-- Daily statements imported from the Treasury, one per account and date.
-- SQLite keeps the import time as ISO 8601 text; the PostgreSQL file uses
-- TIMESTAMPTZ and an identity column instead.

CREATE TABLE treasury_statements (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    statement_date DATE NOT NULL,
    opening_balance BIGINT NOT NULL,
    debit_turnover BIGINT NOT NULL DEFAULT 0 CHECK (debit_turnover >= 0),
    credit_turnover BIGINT NOT NULL DEFAULT 0 CHECK (credit_turnover >= 0),
    closing_balance BIGINT NOT NULL,
    source_file TEXT,
    imported_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    CHECK (closing_balance = opening_balance + credit_turnover - debit_turnover)
);

CREATE UNIQUE INDEX treasury_statements_account_date
    ON treasury_statements (account_id, statement_date);
