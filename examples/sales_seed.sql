-- Demo source data for examples/daily-sales-etl.json: run it against the `sales` database.
DROP TABLE IF EXISTS public.raw_transactions;
DROP TABLE IF EXISTS public.products;
CREATE TABLE public.products (
    id integer PRIMARY KEY,
    category text NOT NULL,
    product_name text NOT NULL
);
CREATE TABLE public.raw_transactions (
    id bigint PRIMARY KEY,
    product_id integer NOT NULL,
    amount numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO public.products (id, category, product_name)
SELECT p, (ARRAY['books', 'garden', 'kitchen', 'toys'])[1 + p % 4], 'product ' || p
FROM generate_series(1, 20) AS p;
-- 300 transactions from 2026-01-27 to 2026-02-16: some fall outside the default date window,
-- every 25th has a non-positive amount (filtered out by clean_transactions).
INSERT INTO public.raw_transactions (id, product_id, amount, created_at)
SELECT t,
       1 + t % 20,
       CASE WHEN t % 25 = 0 THEN -5 ELSE round((t * 7.31) % 900 + 1, 2) END,
       timestamptz '2026-01-27 00:00:00+00' + (t * interval '100 minutes')
FROM generate_series(1, 300) AS t;
