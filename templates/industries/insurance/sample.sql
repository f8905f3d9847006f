-- Sample data of the insurance templates (dates relative to now).
CREATE SCHEMA IF NOT EXISTS insurance;
CREATE SCHEMA IF NOT EXISTS gdpr;
CREATE TABLE IF NOT EXISTS gdpr.erasure_requests (subject_id text PRIMARY KEY, requested_at timestamptz DEFAULT now());
DROP TABLE IF EXISTS insurance.policies, insurance.claims;
CREATE TABLE insurance.policies (
  policy_id int PRIMARY KEY, holder_id int, holder_name text, product text, premium numeric(12, 2), sum_insured numeric(14, 2),
  start_date date, end_date date);
INSERT INTO insurance.policies
SELECT i, 1000 + i % 70, 'Holder ' || (1000 + i % 70), (ARRAY['auto', 'home', 'life', 'travel'])[1 + i % 4],
       round((300 + (i * 53) % 2000)::numeric, 2), round((10000 + (i * 997) % 500000)::numeric, 2),
       current_date - (i * 3) % 500, current_date - (i * 3) % 500 + 365
FROM generate_series(1, 120) AS i;
CREATE TABLE insurance.claims (
  claim_id int, policy_id int, claim_type text, status text, amount numeric(12, 2), incident_at timestamptz,
  filed_at timestamptz, updated_at timestamptz);
INSERT INTO insurance.claims
SELECT i, 1 + i % 120, (ARRAY['collision', 'theft', 'water', 'medical'])[1 + i % 4], 'filed',
       round((200 + (i * 389) % 15000)::numeric, 2), now() - make_interval(days => 5 + i % 200),
       now() - make_interval(days => 3 + i % 200), now() - make_interval(days => 3 + i % 200)
FROM generate_series(1, 90) AS i;
-- Status updates: later rows of the same claim.
INSERT INTO insurance.claims
SELECT claim_id, policy_id, claim_type, (ARRAY['review', 'approved', 'denied', 'paid'])[1 + claim_id % 4], amount, incident_at, filed_at,
       updated_at + interval '2 days'
FROM insurance.claims WHERE claim_id % 2 = 0;
