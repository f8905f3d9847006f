-- Sample data of the healthcare templates (synthetic patients; dates relative to now).
CREATE SCHEMA IF NOT EXISTS healthcare;
DROP TABLE IF EXISTS healthcare.patients, healthcare.providers, healthcare.encounters, healthcare.lab_results;
CREATE TABLE healthcare.patients (
  patient_id int PRIMARY KEY, mrn text, ssn text, full_name text, birth_date date, gender text, zip text);
INSERT INTO healthcare.patients
SELECT i, 'MRN' || lpad(i::text, 7, '0'), lpad((100 + i)::text, 3, '0') || '-' || lpad((i % 90 + 10)::text, 2, '0') || '-' || lpad((i * 37 % 9000 + 1000)::text, 4, '0'),
       'Patient ' || i, date '1950-01-01' + (i * 211) % 20000, (ARRAY['F', 'M'])[1 + i % 2], lpad((10000 + i * 97)::text, 5, '0')
FROM generate_series(1, 60) AS i;
CREATE TABLE healthcare.providers (provider_id int PRIMARY KEY, provider_name text, specialty text);
INSERT INTO healthcare.providers
SELECT i, 'Dr. ' || i, (ARRAY['cardiology', 'oncology', 'internal', 'emergency'])[1 + i % 4] FROM generate_series(1, 8) AS i;
CREATE TABLE healthcare.encounters (
  encounter_id int PRIMARY KEY, patient_id int, provider_id int, encounter_type text, diagnosis_code text,
  admitted_at timestamptz, discharged_at timestamptz, total_charge numeric(12, 2));
INSERT INTO healthcare.encounters
SELECT i, 1 + i % 60, 1 + i % 8, (ARRAY['inpatient', 'outpatient', 'inpatient', 'emergency'])[1 + i % 4],
       (ARRAY['I10', 'E11.9', 'J18.9', 'N39.0', 'I50.9'])[1 + i % 5],
       now() - make_interval(days => 400 - i * 2), now() - make_interval(days => 400 - i * 2) + make_interval(hours => 6 + (i * 13) % 200),
       round((500 + (i * 733) % 25000)::numeric, 2)
FROM generate_series(1, 180) AS i;
CREATE TABLE healthcare.lab_results (
  result_id int, patient_id int, test_code text, value text, unit text, ref_low text, ref_high text,
  collected_at timestamptz, corrected_at timestamptz);
INSERT INTO healthcare.lab_results
SELECT i, 1 + i % 60, (ARRAY['GLU', 'HGB', 'K'])[1 + i % 3], ((ARRAY[70, 12, 3.5])[1 + i % 3] * (0.7 + (i % 9) / 10.0))::text,
       (ARRAY['mg/dL', 'g/dL', 'mmol/L'])[1 + i % 3], (ARRAY['70', '12', '3.5'])[1 + i % 3], (ARRAY['99', '17.5', '5.1'])[1 + i % 3],
       now() - make_interval(days => i), now() - make_interval(days => i)
FROM generate_series(1, 150) AS i;
-- Corrections: a second, later row for some results (the latest wins).
INSERT INTO healthcare.lab_results
SELECT result_id, patient_id, test_code, (value::numeric * 1.01)::text, unit, ref_low, ref_high, collected_at, corrected_at + interval '1 hour'
FROM healthcare.lab_results WHERE result_id % 10 = 0;
