package pgbroker

import "strings"

// schemaSQL creates the broker's schema, tables and functions if they do
// not exist, and replaces the functions with this version's. "{schema}" stands
// for the schema's name, which New has checked is a plain identifier.
//
// channels holds one row per channel: its epoch and the Seq of its latest
// publication. Publishing updates that row, so publishers on one channel
// take turns on its row lock: the transaction that takes Seq n commits (or
// rolls back, giving n back) before the next one gets n+1, and commit order
// is Seq order. messages holds the recent publications, keyed by channel and
// Seq. A row in channels is inserted, with a new epoch, only when none
// exists (a new channel, or one whose data was lost), and whatever messages
// hold for the channel then belongs to an older numbering and is deleted.
const schemaSQL = `
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.channels (
	name    text PRIMARY KEY,
	epoch   text NOT NULL,
	seq     bigint NOT NULL,
	touched timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {schema}.messages (
	channel text NOT NULL,
	seq     bigint NOT NULL,
	data    bytea NOT NULL,
	at      timestamptz NOT NULL,
	meta    bytea,
	PRIMARY KEY (channel, seq)
);

-- snapshots keeps the latest value a State wrote on a channel, at its
-- position, so that a Hub that lost more than the messages keep rebuilds
-- it from there.
CREATE TABLE IF NOT EXISTS {schema}.snapshots (
	channel text PRIMARY KEY,
	epoch   text NOT NULL,
	seq     bigint NOT NULL,
	data    bytea NOT NULL
);

-- meta, what a hub says of a publication beside its data (live.Message's
-- Meta), came after the table: add it to older tables. Checked first, as
-- ALTER TABLE waits for every transaction that published.
DO $do$ BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = '{schema}.messages'::regclass AND attname = 'meta' AND NOT attisdropped) THEN
		ALTER TABLE {schema}.messages ADD COLUMN meta bytea;
	END IF;
END $do$;

-- idempotency keeps, per key, the response to a request that a retry gets
-- instead of running it again; response is NULL while the request runs.
CREATE TABLE IF NOT EXISTS {schema}.idempotency (
	key      text PRIMARY KEY,
	response bytea,
	expires  timestamptz NOT NULL
);

-- publish appends a publication and announces it, in the caller's
-- transaction: the announcement is delivered when, and only if, it commits.
-- p_epoch is used if the channel has no row; p_inline is the announcement's
-- tail, with the data, as text if it fits, else NULL; p_notify names the NOTIFY channel;
-- p_size and p_age_ms bound the history (p_age_ms <= 0: no age limit);
-- p_meta is the publication's meta, NULL for none. (Brokers of older
-- versions call the function without p_meta, which stays theirs.)
CREATE OR REPLACE FUNCTION {schema}.publish(
	p_channel text, p_epoch text, p_data bytea, p_inline text, p_notify text,
	p_size bigint, p_age_ms bigint, p_meta bytea,
	OUT o_epoch text, OUT o_seq bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
	FOR i IN 1..3 LOOP
		UPDATE {schema}.channels c SET seq = c.seq + 1, touched = now()
			WHERE c.name = p_channel RETURNING c.epoch, c.seq INTO o_epoch, o_seq;
		EXIT WHEN FOUND;
		INSERT INTO {schema}.channels AS c (name, epoch, seq) VALUES (p_channel, p_epoch, 1)
			ON CONFLICT (name) DO NOTHING RETURNING c.epoch, c.seq INTO o_epoch, o_seq;
		IF FOUND THEN
			DELETE FROM {schema}.messages m WHERE m.channel = p_channel;
			EXIT;
		END IF;
		-- Another transaction created the row since the UPDATE: take a turn on it.
	END LOOP;
	IF o_seq IS NULL THEN
		RAISE EXCEPTION 'live: the row of channel % keeps vanishing', p_channel;
	END IF;
	PERFORM {schema}.store(p_channel, o_seq, p_data, p_inline, p_notify, p_size, p_age_ms, o_epoch, p_meta);
END
$fn$;

-- publish_if is publish on condition that the channel's row is at p_head_epoch
-- and p_head_seq. The comparison is in the UPDATE that takes the row lock:
-- when another publication held the lock meanwhile, the UPDATE finds the row
-- it committed, which no longer matches, and takes nothing. A channel without
-- a row matches no head. It returns o_epoch '' and o_seq 0 when it took
-- nothing.
CREATE OR REPLACE FUNCTION {schema}.publish_if(
	p_channel text, p_head_epoch text, p_head_seq bigint, p_data bytea, p_inline text, p_notify text,
	p_size bigint, p_age_ms bigint, p_meta bytea,
	OUT o_epoch text, OUT o_seq bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
	UPDATE {schema}.channels c SET seq = c.seq + 1, touched = now()
		WHERE c.name = p_channel AND c.epoch = p_head_epoch AND c.seq = p_head_seq
		RETURNING c.epoch, c.seq INTO o_epoch, o_seq;
	IF NOT FOUND THEN
		o_epoch := '';
		o_seq := 0;
		RETURN;
	END IF;
	PERFORM {schema}.store(p_channel, o_seq, p_data, p_inline, p_notify, p_size, p_age_ms, o_epoch, p_meta);
END
$fn$;

-- store inserts the publication numbered p_seq, with its meta, trims the
-- history and announces it, for publish and publish_if, which hold the
-- channel's row lock.
CREATE OR REPLACE FUNCTION {schema}.store(
	p_channel text, p_seq bigint, p_data bytea, p_inline text, p_notify text,
	p_size bigint, p_age_ms bigint, p_epoch text, p_meta bytea)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
	v_now    timestamptz;
	v_oldest timestamptz;
BEGIN
	-- Taken under the row lock, so times grow with Seq.
	v_now := clock_timestamp();
	INSERT INTO {schema}.messages (channel, seq, data, at, meta) VALUES (p_channel, p_seq, p_data, v_now, p_meta);
	DELETE FROM {schema}.messages m
		WHERE m.channel = p_channel AND m.seq <= p_seq - p_size AND m.seq > p_seq - p_size - 64;
	IF p_age_ms > 0 THEN
		SELECT m.at INTO v_oldest FROM {schema}.messages m WHERE m.channel = p_channel ORDER BY m.seq LIMIT 1;
		IF v_oldest < v_now - p_age_ms * interval '1 millisecond' THEN
			-- At most 100 per publication; Since ignores any left.
			DELETE FROM {schema}.messages m
				WHERE m.channel = p_channel AND m.seq < p_seq
				AND m.seq IN (SELECT m2.seq FROM {schema}.messages m2 WHERE m2.channel = p_channel ORDER BY m2.seq LIMIT 100)
				AND m.at < v_now - p_age_ms * interval '1 millisecond';
		END IF;
	END IF;

	PERFORM pg_notify(p_notify, p_channel || ' ' || p_epoch || ' ' || p_seq || ' ' || coalesce(p_inline, 'r'));
END
$fn$;

-- head returns a channel's epoch and latest Seq, giving a new channel its
-- row (Seq 0, epoch p_epoch) so that its first publication is numbered in
-- the epoch returned. It reads without waiting for publishers that hold
-- the row: their publications are announced when they commit.
CREATE OR REPLACE FUNCTION {schema}.head(p_channel text, p_epoch text, OUT o_epoch text, OUT o_seq bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
	FOR i IN 1..3 LOOP
		SELECT c.epoch, c.seq INTO o_epoch, o_seq FROM {schema}.channels c WHERE c.name = p_channel;
		EXIT WHEN FOUND;
		INSERT INTO {schema}.channels AS c (name, epoch, seq) VALUES (p_channel, p_epoch, 0)
			ON CONFLICT (name) DO NOTHING RETURNING c.epoch, c.seq INTO o_epoch, o_seq;
		IF FOUND THEN
			DELETE FROM {schema}.messages m WHERE m.channel = p_channel;
			EXIT;
		END IF;
	END LOOP;
	IF o_seq IS NULL THEN
		RAISE EXCEPTION 'live: the row of channel % keeps vanishing', p_channel;
	END IF;
END
$fn$;
`

// inSchema returns sql with schema in place of {schema}.
func inSchema(sql, schema string) string {
	return strings.ReplaceAll(sql, "{schema}", schema)
}
