-- Sample data of the retail templates (dates relative to now).
CREATE SCHEMA IF NOT EXISTS retail;
CREATE SCHEMA IF NOT EXISTS gdpr;
CREATE TABLE IF NOT EXISTS gdpr.erasure_requests (subject_id text PRIMARY KEY, requested_at timestamptz DEFAULT now());
DROP TABLE IF EXISTS retail.stores, retail.products, retail.sales, retail.inventory, retail.loyalty_members;
CREATE TABLE retail.stores (store_id int PRIMARY KEY, region text, opened_at date);
INSERT INTO retail.stores SELECT i, (ARRAY['north', 'south', 'east', 'west'])[1 + i % 4], date '2015-01-01' + i * 90 FROM generate_series(1, 6) AS i;
CREATE TABLE retail.products (sku text PRIMARY KEY, category text, unit_cost numeric(10, 2), reorder_point int);
INSERT INTO retail.products SELECT 'SKU-' || i, (ARRAY['grocery', 'apparel', 'home', 'toys'])[1 + i % 4], round((2 + i * 1.7)::numeric, 2), 10 + i % 15 FROM generate_series(1, 30) AS i;
CREATE TABLE retail.loyalty_members (member_id int PRIMARY KEY, email text, tier text, joined_at date);
INSERT INTO retail.loyalty_members SELECT i, 'member' || i || '@example.com', (ARRAY['silver', 'gold', 'platinum'])[1 + i % 3], current_date - (i * 11) FROM generate_series(1, 25) AS i;
CREATE TABLE retail.sales (
  sale_id int PRIMARY KEY, basket_id int, store_id int, sku text, qty int, unit_price numeric(10, 2), member_id int, sold_at timestamptz);
INSERT INTO retail.sales
SELECT i, i / 3, 1 + i % 6, 'SKU-' || (1 + i % 30), 1 + i % 4, round((4 + (1 + i % 30) * 2.3)::numeric, 2),
       CASE WHEN i % 4 = 0 THEN NULL ELSE 1 + i % 25 END, now() - make_interval(hours => i * 3)
FROM generate_series(1, 500) AS i;
CREATE TABLE retail.inventory (store_id int, sku text, on_hand int, updated_at timestamptz);
INSERT INTO retail.inventory
SELECT 1 + i % 6, 'SKU-' || (1 + i % 30), (i * 13) % 80, now() - make_interval(hours => i) FROM generate_series(1, 360) AS i;
