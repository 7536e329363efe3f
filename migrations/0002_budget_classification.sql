-- Budget classification codes (КБК) and the code each payment document is
-- booked to. The column is nullable because documents entered before this
-- version carry no code.
-- The index is built inside the transaction because a portable migration cannot
-- use CONCURRENTLY; the build is short, since the new column is NULL in every row.
-- lint-ack index-without-concurrently: portable SQL, and the indexed column is new

CREATE TABLE kbk (
    code TEXT PRIMARY KEY,
    name_ru TEXT NOT NULL,
    name_kk TEXT NOT NULL
);

ALTER TABLE payment_documents ADD COLUMN kbk_code TEXT REFERENCES kbk (code);

CREATE INDEX payment_documents_kbk ON payment_documents (kbk_code);
