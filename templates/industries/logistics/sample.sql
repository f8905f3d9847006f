-- Sample data of the logistics templates (dates relative to now).
CREATE SCHEMA IF NOT EXISTS logistics;
DROP TABLE IF EXISTS logistics.shipments, logistics.tracking_events, logistics.fleet_telemetry;
CREATE TABLE logistics.shipments (
  shipment_id int PRIMARY KEY, carrier text, origin text, destination text, weight_kg numeric(10, 2),
  shipped_at timestamptz, promised_at timestamptz, delivered_at timestamptz);
INSERT INTO logistics.shipments
SELECT i, (ARRAY['DHL', 'UPS', 'FedEx'])[1 + i % 3], (ARRAY['AMS', 'FRA', 'LHR'])[1 + i % 3], (ARRAY['NYC', 'CHI', 'MAD', 'WAW'])[1 + i % 4],
       round((1 + (i * 7) % 40)::numeric, 2), now() - make_interval(hours => 24 * 10 - i),
       now() - make_interval(hours => 24 * 10 - i - 72),
       CASE WHEN i % 6 <> 0 THEN now() - make_interval(hours => 24 * 10 - i - 48 - (i * 5) % 48) END
FROM generate_series(1, 150) AS i;
CREATE TABLE logistics.tracking_events (event_id int PRIMARY KEY, shipment_id int, status text, location text, event_at timestamptz);
INSERT INTO logistics.tracking_events
SELECT s.shipment_id * 10 + k, s.shipment_id, (ARRAY['picked_up', 'in_transit', 'delivered'])[k], (ARRAY[s.origin, 'HUB', s.destination])[k],
       s.shipped_at + make_interval(hours => (k - 1) * 24)
FROM logistics.shipments AS s, generate_series(1, 3) AS k
WHERE k < 3 OR s.delivered_at IS NOT NULL;
CREATE TABLE logistics.fleet_telemetry (vehicle_id text, recorded_at timestamptz, speed_kmh numeric(6, 1), fuel_pct numeric(5, 1), lat double precision, lon double precision);
INSERT INTO logistics.fleet_telemetry
SELECT 'TRK-' || (1 + i % 8), date_trunc('hour', now()) - make_interval(mins => i * 2), (i * 17) % 130, 100 - (i % 60), 52.0 + i / 1000.0, 4.9 + i / 1000.0
FROM generate_series(1, 600) AS i;
