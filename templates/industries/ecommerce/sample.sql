-- Sample data of the ecommerce templates (dates relative to now). Customer 3 asked for erasure (GDPR sample).
CREATE SCHEMA IF NOT EXISTS ecommerce;
CREATE SCHEMA IF NOT EXISTS gdpr;
CREATE TABLE IF NOT EXISTS gdpr.erasure_requests (subject_id text PRIMARY KEY, requested_at timestamptz DEFAULT now());
INSERT INTO gdpr.erasure_requests (subject_id) VALUES ('3') ON CONFLICT DO NOTHING;
DROP TABLE IF EXISTS ecommerce.customers, ecommerce.orders, ecommerce.order_items, ecommerce.web_events;
CREATE TABLE ecommerce.customers (customer_id int PRIMARY KEY, email text, country text, signup_at timestamptz);
INSERT INTO ecommerce.customers SELECT i, 'customer' || i || '@example.org', (ARRAY['US', 'DE', 'FR', 'GB'])[1 + i % 4], now() - make_interval(days => 30 + i * 9) FROM generate_series(1, 40) AS i;
CREATE TABLE ecommerce.orders (order_id int PRIMARY KEY, customer_id int, status text, ordered_at timestamptz, shipped_at timestamptz, total numeric(12, 2));
INSERT INTO ecommerce.orders
SELECT i, 1 + i % 40, (ARRAY['placed', 'shipped', 'delivered', 'delivered', 'cancelled'])[1 + i % 5],
       now() - make_interval(hours => i * 5), CASE WHEN i % 5 IN (1, 2, 3) THEN now() - make_interval(hours => i * 5 - 20) END,
       round((15 + (i * 41) % 400)::numeric, 2)
FROM generate_series(1, 300) AS i;
CREATE TABLE ecommerce.order_items (order_id int, product_id int, qty int, price numeric(10, 2));
INSERT INTO ecommerce.order_items SELECT 1 + i % 300, 1 + i % 50, 1 + i % 3, round((5 + i % 60)::numeric, 2) FROM generate_series(1, 700) AS i;
CREATE TABLE ecommerce.web_events (event_id int PRIMARY KEY, session_id text, customer_id int, event_type text, page text, occurred_at timestamptz);
INSERT INTO ecommerce.web_events
SELECT i, 'S' || (i / 8), CASE WHEN (i / 8) % 3 = 0 THEN NULL ELSE 1 + (i / 8) % 40 END,
       (ARRAY['page_view', 'page_view', 'page_view', 'add_to_cart', 'page_view', 'purchase', 'page_view', 'page_view'])[1 + i % 8],
       '/p/' || (i % 25), now() - make_interval(mins => 20000 - i * 7)
FROM generate_series(1, 800) AS i;
