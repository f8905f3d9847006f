-- Sample data of the manufacturing templates (dates relative to now).
CREATE SCHEMA IF NOT EXISTS manufacturing;
DROP TABLE IF EXISTS manufacturing.machines, manufacturing.sensor_readings, manufacturing.production_runs, manufacturing.maintenance_events;
CREATE TABLE manufacturing.machines (machine_id text PRIMARY KEY, line text, plant text, model text);
INSERT INTO manufacturing.machines SELECT 'M' || i, 'L' || (1 + i % 3), (ARRAY['Eindhoven', 'Lyon'])[1 + i % 2], 'CNC-' || (i % 4) FROM generate_series(1, 10) AS i;
CREATE TABLE manufacturing.sensor_readings (machine_id text, sensor text, reading numeric(10, 3), recorded_at timestamptz);
INSERT INTO manufacturing.sensor_readings
SELECT 'M' || (1 + i % 10), (ARRAY['temperature', 'vibration', 'pressure'])[1 + i % 3],
       CASE i % 3 WHEN 0 THEN 60 + (i * 7) % 40 WHEN 1 THEN 2 + (i * 3) % 8 ELSE 5 + (i % 5) END,
       now() - make_interval(mins => i * 5)
FROM generate_series(1, 900) AS i;
CREATE TABLE manufacturing.production_runs (run_id int PRIMARY KEY, machine_id text, started_at timestamptz, ended_at timestamptz, units_produced int, units_scrapped int);
INSERT INTO manufacturing.production_runs
SELECT i, 'M' || (1 + i % 10), now() - make_interval(hours => i * 4), now() - make_interval(hours => i * 4 - 3), 100 + (i * 13) % 200, (i * 7) % 12
FROM generate_series(1, 120) AS i;
CREATE TABLE manufacturing.maintenance_events (event_id int PRIMARY KEY, machine_id text, kind text, performed_at timestamptz);
INSERT INTO manufacturing.maintenance_events SELECT i, 'M' || (1 + i % 10), (ARRAY['inspection', 'repair'])[1 + i % 2], now() - make_interval(days => i * 3) FROM generate_series(1, 40) AS i;
