-- Sample data of the telecom templates (dates relative to now).
CREATE SCHEMA IF NOT EXISTS telecom;
CREATE SCHEMA IF NOT EXISTS gdpr;
CREATE TABLE IF NOT EXISTS gdpr.erasure_requests (subject_id text PRIMARY KEY, requested_at timestamptz DEFAULT now());
DROP TABLE IF EXISTS telecom.subscribers, telecom.cdrs, telecom.cell_measurements;
CREATE TABLE telecom.subscribers (
  subscriber_id int PRIMARY KEY, msisdn text, email text, plan text, status text, activated_at timestamptz, support_contacts int);
INSERT INTO telecom.subscribers
SELECT i, '+3161' || lpad((i * 7919)::text, 7, '0'), 'sub' || i || '@example.net', (ARRAY['prepaid', 'basic', 'unlimited'])[1 + i % 3],
       CASE WHEN i % 9 = 0 THEN 'churned' ELSE 'active' END, now() - make_interval(days => 20 + i * 13), i % 5
FROM generate_series(1, 50) AS i;
CREATE TABLE telecom.cdrs (call_id int PRIMARY KEY, subscriber_id int, msisdn text, call_type text, call_start timestamptz, duration_s int, bytes_used bigint, cell_id text);
INSERT INTO telecom.cdrs
SELECT i, 1 + i % 50, '+3161' || lpad(((1 + i % 50) * 7919)::text, 7, '0'), (ARRAY['voice', 'data', 'sms', 'voice', 'dropped'])[1 + i % 5],
       now() - make_interval(hours => i), (i * 31) % 900, CASE WHEN i % 5 = 1 THEN (i * 104729) % 50000000 ELSE 0 END, 'C' || (1 + i % 12)
FROM generate_series(1, 900) AS i;
CREATE TABLE telecom.cell_measurements (cell_id text, measured_at timestamptz, drop_rate numeric(6, 4), throughput_mbps numeric(8, 1), available boolean);
INSERT INTO telecom.cell_measurements
SELECT 'C' || (1 + i % 12), date_trunc('hour', now()) - make_interval(mins => 15 * (i / 12)), ((i * 7) % 40) / 1000.0, 20 + (i * 13) % 180, i % 97 <> 0
FROM generate_series(1, 576) AS i;
