-- The shop's schema and seed data. Safe to run again: the services run it on start.
BEGIN;
-- Several services migrate at once on start; one at a time.
SELECT pg_advisory_xact_lock(7316);

CREATE TABLE IF NOT EXISTS products (
    id          BIGINT PRIMARY KEY,
    name        TEXT   NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    popularity  INT    NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS users (
    id    BIGINT PRIMARY KEY,
    name  TEXT   NOT NULL,
    email TEXT   NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS orders (
    id              BIGSERIAL PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id),
    -- Retries of one request carry one key: the second insert finds the first.
    idempotency_key TEXT   NOT NULL UNIQUE,
    total_cents     BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS order_items (
    order_id    BIGINT NOT NULL REFERENCES orders (id),
    product_id  BIGINT NOT NULL REFERENCES products (id),
    quantity    INT    NOT NULL CHECK (quantity > 0),
    price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

INSERT INTO products (id, name, price_cents, popularity)
SELECT n, 'Product ' || n, 100 * n + 99, (n * 37) % 101
FROM generate_series(1, 50) AS n
ON CONFLICT (id) DO NOTHING;

INSERT INTO users (id, name, email)
SELECT n, 'User ' || n, 'user' || n || '@example.com'
FROM generate_series(1, 20) AS n
ON CONFLICT (id) DO NOTHING;
COMMIT;
