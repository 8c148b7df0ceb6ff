-- docker-compose's data loader: a Criteo-like table `criteo` on one
-- segment, the shape hopper's `input = { kind = "criteo" }` reads:
--   id bigint, label int (0/1, the class), i1 … i13 real (counts; NULL
--   sometimes), c1 … c26 text (categories; NULL sometimes)
-- Its rows are this segment's share of ROWS (ids SEGMENT, SEGMENT +
-- SEGMENTS, …). The label depends on i1, i3 and c1, so models have
-- something to learn. Loads nothing if the table already has rows.
--
--   psql -v segment=0 -v segments=2 -v rows=20000 -f compose-data.sql
\set ON_ERROR_STOP on
SELECT set_config('hopper.segment', :'segment', false),
       set_config('hopper.segments', :'segments', false),
       set_config('hopper.rows', :'rows', false);

DO $load$
DECLARE
    seg int := current_setting('hopper.segment')::int;
    segs int := current_setting('hopper.segments')::int;
    n bigint := current_setting('hopper.rows')::bigint / segs;
    defs text;
    draws text;
    cols text;
BEGIN
    SELECT string_agg(format('i%s real', j), ', ') INTO defs FROM generate_series(1, 13) j;
    SELECT defs || ', ' || string_agg(format('c%s text', j), ', ') INTO defs FROM generate_series(1, 26) j;
    EXECUTE format('CREATE TABLE IF NOT EXISTS criteo (id bigint, label int, %s)', defs);
    IF EXISTS (SELECT 1 FROM criteo) THEN
        RAISE NOTICE 'criteo already has rows on this segment: nothing loaded';
        RETURN;
    END IF;
    -- Counts: log-normal-ish, 10 % NULL. Categories: 40 values, skewed, 5 % NULL.
    SELECT string_agg(format(
        'CASE WHEN random() < 0.1 THEN NULL ELSE floor(exp(random() * 5))::real END AS i%s', j), ', ')
      INTO draws FROM generate_series(1, 13) j;
    SELECT draws || ', ' || string_agg(format(
        'CASE WHEN random() < 0.05 THEN NULL ELSE %L || floor(random() ^ 2 * 40)::int END AS c%s',
        'v' || j || '_', j), ', ')
      INTO draws FROM generate_series(1, 26) j;
    SELECT string_agg(format('i%s', j), ', ') INTO cols FROM generate_series(1, 13) j;
    SELECT cols || ', ' || string_agg(format('c%s', j), ', ') INTO cols FROM generate_series(1, 26) j;
    PERFORM setseed(0.1 + seg / 100.0);
    EXECUTE format(
        'INSERT INTO criteo
         SELECT id,
                (random() < 1 / (1 + exp(-(0.8 * (ln(1 + coalesce(i1, 0)) - 2)
                                          - 0.6 * (ln(1 + coalesce(i3, 0)) - 2)
                                          + CASE WHEN c1 IN (%L, %L, %L) THEN 1.5 ELSE -0.4 END))))::int,
                %s
         FROM (SELECT g * %s + %s AS id, %s FROM generate_series(0::bigint, %s) g) r',
        'v1_0', 'v1_1', 'v1_2', cols, segs, seg, draws, n - 1);
    ANALYZE criteo;
END
$load$;

SELECT count(*) AS rows, round(avg(label), 3) AS positive_rate FROM criteo;
