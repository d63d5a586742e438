-- First-click attribution in Flink SQL, batch mode: the reference job that
-- scripts/bench-vs-flink compares `streaming replay` against.
--
-- The rule (docs/design.md §1, shared/DESIGN.md §1): for a checkout of user u,
-- product p at event time T, credit the click of the same (u, p) with event
-- time t in [T - lookback, T], both ends included, that is smallest by
-- (t, click_id); none -> the row is still written with NULL click fields.
-- One row per distinct checkout_id; a repeated click_id is stored once.
--
-- Run it with first_click.py (PyFlink, EnvironmentSettings.in_batch_mode()),
-- which replaces the ${...} placeholders and runs the statements in order; the
-- text is plain Flink SQL otherwise (the SQL client takes it as well once the
-- placeholders are filled in). Statements end with a semicolon at end of line.
--
-- Placeholders: ${CLICKS} ${CHECKOUTS} ${USERS} (input files), ${OUT} (output
-- directory, JSON lines in part files), ${LOOKBACK_SECS} (firstclick's default
-- is 3600: `streaming replay --help`).
--
-- Input handling, chosen to match what firstclick accepts (docs/design.md §2):
-- - every field is read as STRING (a JSON number keeps its text), so user_id
--   may be 17 or "17"; lines that are not JSON are skipped
--   (json.ignore-parse-errors), lines missing a required field or with an
--   unparsable time are dropped by the WHERE clauses below;
-- - datetime_occured: 'YYYY-MM-DD HH:MM:SS[.ffffff]' read as UTC, or the
--   same with 'T' and a trailing 'Z' (RFC 3339 in UTC). RFC 3339 with a
--   numeric offset (+02:00) is NOT handled here (firstclick handles it);
--   the benchmark's files use the producers' format only.
-- - de-duplication: checkouts by checkout_id and clicks by click_id, keeping
--   one row each (ROW_NUMBER() ... = 1). Batch SQL has no arrival order, so
--   "first" is the earliest event time (then the other fields); the duplicates
--   in generated data are byte-identical lines, so which copy is kept does not
--   matter.

SET 'table.local-time-zone' = 'UTC';

CREATE TEMPORARY TABLE clicks_src (
  click_id STRING,
  user_id STRING,
  product_id STRING,
  datetime_occured STRING
) WITH (
  'connector' = 'filesystem',
  'path' = '${CLICKS}',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true',
  'json.fail-on-missing-field' = 'false'
);

CREATE TEMPORARY TABLE checkouts_src (
  checkout_id STRING,
  user_id STRING,
  product_id STRING,
  payment_method STRING,
  total_amount STRING,
  shipping_address STRING,
  billing_address STRING,
  user_agent STRING,
  ip_address STRING,
  datetime_occured STRING
) WITH (
  'connector' = 'filesystem',
  'path' = '${CHECKOUTS}',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true',
  'json.fail-on-missing-field' = 'false'
);

CREATE TEMPORARY TABLE users_src (
  id BIGINT,
  user_name STRING
) WITH (
  'connector' = 'filesystem',
  'path' = '${USERS}',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true',
  'json.fail-on-missing-field' = 'false'
);

-- The output table's columns (shared/DESIGN.md §5); timestamps as
-- TIMESTAMP_LTZ in UTC, written by the json format as ISO-8601 with 'Z'.
CREATE TEMPORARY TABLE rows_sink (
  checkout_id STRING,
  user_id STRING,
  user_name STRING,
  product_id STRING,
  payment_method STRING,
  total_amount DOUBLE,
  shipping_address STRING,
  billing_address STRING,
  user_agent STRING,
  ip_address STRING,
  checkout_time TIMESTAMP_LTZ(6),
  click_id STRING,
  click_time TIMESTAMP_LTZ(6),
  attribution_model STRING,
  processed_at TIMESTAMP_LTZ(3)
) WITH (
  'connector' = 'filesystem',
  'path' = '${OUT}',
  'format' = 'json',
  'json.timestamp-format.standard' = 'ISO-8601',
  'json.encode.decimal-as-plain-number' = 'true'
);

-- Parsed, valid clicks: the key (uid, product_id) and the event time.
CREATE TEMPORARY VIEW clicks_parsed AS
SELECT click_id, uid, product_id, ts
FROM (
  SELECT
    click_id,
    TRY_CAST(user_id AS BIGINT) AS uid,
    product_id,
    TRY_CAST(REPLACE(REPLACE(datetime_occured, 'T', ' '), 'Z', '') AS TIMESTAMP(6)) AS ts
  FROM clicks_src
  WHERE click_id IS NOT NULL AND click_id <> ''
    AND product_id IS NOT NULL AND product_id <> ''
)
WHERE uid IS NOT NULL AND ts IS NOT NULL
  AND ts >= TIMESTAMP '1970-01-01 00:00:00' AND ts < TIMESTAMP '2200-01-01 00:00:00';

-- One row per click_id.
CREATE TEMPORARY VIEW clicks AS
SELECT click_id, uid, product_id, ts
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY click_id ORDER BY ts, uid, product_id) AS rn
  FROM clicks_parsed
)
WHERE rn = 1;

CREATE TEMPORARY VIEW checkouts_parsed AS
SELECT *
FROM (
  SELECT
    checkout_id,
    TRY_CAST(user_id AS BIGINT) AS uid,
    product_id,
    payment_method,
    TRY_CAST(total_amount AS DOUBLE) AS total_amount,
    shipping_address,
    billing_address,
    user_agent,
    ip_address,
    TRY_CAST(REPLACE(REPLACE(datetime_occured, 'T', ' '), 'Z', '') AS TIMESTAMP(6)) AS ts
  FROM checkouts_src
  WHERE checkout_id IS NOT NULL AND checkout_id <> ''
    AND product_id IS NOT NULL AND product_id <> ''
)
WHERE uid IS NOT NULL AND ts IS NOT NULL
  AND ts >= TIMESTAMP '1970-01-01 00:00:00' AND ts < TIMESTAMP '2200-01-01 00:00:00';

-- One row per checkout_id (a repeated id produces no second row).
CREATE TEMPORARY VIEW checkouts AS
SELECT checkout_id, uid, product_id, payment_method, total_amount, shipping_address,
       billing_address, user_agent, ip_address, ts
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY checkout_id ORDER BY ts, uid, product_id) AS rn
  FROM checkouts_parsed
)
WHERE rn = 1;

-- One user per id (the file has one line per id; this only guards the join).
CREATE TEMPORARY VIEW users AS
SELECT id, user_name
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY user_name) AS rn
  FROM users_src
  WHERE id IS NOT NULL
)
WHERE rn = 1;

-- Every checkout with every candidate click of its (user, product) pair in
-- [T - lookback, T]; the LEFT JOIN keeps checkouts without any (organic).
-- Numbered per checkout (not per pair: repeat purchases stay separate rows).
CREATE TEMPORARY VIEW credited AS
SELECT *
FROM (
  SELECT
    k.checkout_id, k.uid, k.product_id, k.payment_method, k.total_amount,
    k.shipping_address, k.billing_address, k.user_agent, k.ip_address,
    k.ts AS checkout_time,
    c.click_id, c.ts AS click_time,
    ROW_NUMBER() OVER (PARTITION BY k.checkout_id ORDER BY c.ts, c.click_id) AS rn
  FROM checkouts AS k
  LEFT JOIN clicks AS c
    ON c.uid = k.uid
   AND c.product_id = k.product_id
   AND c.ts >= TIMESTAMPADD(SECOND, -${LOOKBACK_SECS}, k.ts)
   AND c.ts <= k.ts
)
WHERE rn = 1;

INSERT INTO rows_sink
SELECT
  r.checkout_id,
  CAST(r.uid AS STRING),
  u.user_name,
  r.product_id,
  r.payment_method,
  r.total_amount,
  r.shipping_address,
  r.billing_address,
  r.user_agent,
  r.ip_address,
  CAST(r.checkout_time AS TIMESTAMP_LTZ(6)),
  r.click_id,
  CAST(r.click_time AS TIMESTAMP_LTZ(6)),
  'first_click',
  CURRENT_TIMESTAMP
FROM credited AS r
LEFT JOIN users AS u ON u.id = r.uid;
