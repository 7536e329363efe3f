-- Application tables of Парус-КАЗ.Бюджет: the KATO territory classifier, KNP
-- payment purpose codes, organizations, their bank accounts and payment documents.
-- Classifier codes are TEXT because a column declared INTEGER stores '007' as 7.
-- Amounts are in tiyn (1/100 tenge); BIGINT keeps sums above 21 million tenge
-- within range on PostgreSQL, where INTEGER has 32 bits.

CREATE TABLE kato (
    code TEXT PRIMARY KEY,
    parent_code TEXT REFERENCES kato (code),
    name_ru TEXT NOT NULL,
    name_kk TEXT NOT NULL
);

CREATE TABLE knp (
    code TEXT PRIMARY KEY,
    name_ru TEXT NOT NULL,
    name_kk TEXT NOT NULL
);

CREATE TABLE organizations (
    id INTEGER PRIMARY KEY,
    bin TEXT UNIQUE NOT NULL,
    name_ru TEXT NOT NULL,
    name_kk TEXT,
    kato_code TEXT REFERENCES kato (code)
);

CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id),
    iban TEXT UNIQUE NOT NULL,
    currency TEXT
);

CREATE TABLE payment_documents (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    doc_number TEXT,
    doc_date DATE NOT NULL,
    amount BIGINT NOT NULL,
    knp_code TEXT REFERENCES knp (code),
    kbe TEXT,
    purpose TEXT
);

CREATE INDEX payment_documents_account_date ON payment_documents (account_id, doc_date);
CREATE INDEX accounts_organization ON accounts (organization_id);
