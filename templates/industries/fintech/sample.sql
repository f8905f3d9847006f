-- Sample data of the fintech templates (deterministic; dates relative to now). Loaded by tests/e2e/test_templates.py.
CREATE SCHEMA IF NOT EXISTS fintech;
DROP TABLE IF EXISTS fintech.payments, fintech.merchants;
CREATE TABLE fintech.merchants (merchant_id int PRIMARY KEY, merchant_name text, mcc text, risk_tier text);
INSERT INTO fintech.merchants
SELECT i, 'Merchant ' || i, (ARRAY['5411', '5812', '5999', '7995'])[1 + i % 4], CASE WHEN i % 7 = 0 THEN 'high' ELSE 'low' END
FROM generate_series(1, 20) AS i;
CREATE TABLE fintech.payments (
  payment_id bigint PRIMARY KEY, card_number text, merchant_id int, customer_id int, amount numeric(12, 2),
  currency text, status text, country text, created_at timestamptz);
INSERT INTO fintech.payments
SELECT i,
       '4' || lpad(((i % 40) * 7919 + 100000000000000)::text, 15, '0'),
       1 + i % 20, 1 + i % 40,
       round((5 + (i * 37) % 1200)::numeric + (i % 100) / 100.0, 2),
       (ARRAY['USD', 'EUR', 'GBP'])[1 + i % 3],
       (ARRAY['captured', 'captured', 'captured', 'authorized', 'declined'])[1 + i % 5],
       (ARRAY['US', 'US', 'US', 'DE', 'GB'])[1 + i % 5],
       now() - make_interval(mins => i * 17)
FROM generate_series(1, 400) AS i;
