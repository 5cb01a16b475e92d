package pgbroker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// schemaSQL creates the broker's schema, tables and functions if they do
// not exist, and replaces the functions with this version's. "{schema}" stands
// for the schema's name, which New has checked is a plain identifier.
//
// channels holds one row per channel: its epoch and the Seq of its latest
// publication. Publishing updates that row, so publishers on one channel
// take turns on its row lock: the transaction that takes Seq n commits (or
// rolls back, giving n back) before the next one gets n+1, and commit order
// is Seq order. messages holds the recent publications, keyed by channel and
// Seq, with the idempotency key each was published under, if any
// (live.PublishKey), unique per channel. A row in channels is inserted,
// with a new epoch, only when none exists (a new channel, or one whose data
// was lost), and whatever messages hold for the channel then belongs to an
// older numbering and is deleted, keys and all.
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
	key     text,
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

-- key, the idempotency key of a publication (live.PublishKey), came after
-- the table too, with its index, which makes it one publication per key
-- and channel and finds it. Both are checked first, as ALTER TABLE and
-- CREATE INDEX wait for every transaction that published (and the index
-- is built with no row in it: older rows have no key).
DO $do$ BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = '{schema}.messages'::regclass AND attname = 'key' AND NOT attisdropped) THEN
		ALTER TABLE {schema}.messages ADD COLUMN key text;
	END IF;
	IF to_regclass('{schema}.messages_key') IS NULL THEN
		CREATE UNIQUE INDEX messages_key ON {schema}.messages (channel, key) WHERE key IS NOT NULL;
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
-- p_meta is the publication's meta, NULL for none; p_key its idempotency
-- key, NULL for none: when a publication in the channel's history has it,
-- publish stores and announces nothing and returns that one's position.
-- (Brokers of older versions call the function without p_meta or p_key,
-- which stay theirs.)
CREATE OR REPLACE FUNCTION {schema}.publish(
	p_channel text, p_epoch text, p_data bytea, p_inline text, p_notify text,
	p_size bigint, p_age_ms bigint, p_meta bytea, p_key text,
	OUT o_epoch text, OUT o_seq bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
	v_seq bigint;
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
	IF p_key IS NOT NULL THEN
		v_seq := {schema}.keyed(p_channel, p_key);
		IF v_seq IS NOT NULL THEN
			o_seq := v_seq;
			RETURN;
		END IF;
	END IF;
	PERFORM {schema}.store(p_channel, o_seq, p_data, p_inline, p_notify, p_size, p_age_ms, o_epoch, p_meta, p_key);
END
$fn$;

-- publish_if is publish on condition that the channel's row is at p_head_epoch
-- and p_head_seq. The comparison is in the UPDATE that takes the row lock:
-- when another publication held the lock meanwhile, the UPDATE finds the row
-- it committed, which no longer matches, and takes nothing. A channel without
-- a row matches no head. It returns o_epoch '' and o_seq 0 when it took
-- nothing. Under a key that a publication in the channel's history has
-- (p_key, as publish's), it returns that one's position whatever the head.
CREATE OR REPLACE FUNCTION {schema}.publish_if(
	p_channel text, p_head_epoch text, p_head_seq bigint, p_data bytea, p_inline text, p_notify text,
	p_size bigint, p_age_ms bigint, p_meta bytea, p_key text,
	OUT o_epoch text, OUT o_seq bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
	v_seq bigint;
BEGIN
	UPDATE {schema}.channels c SET seq = c.seq + 1, touched = now()
		WHERE c.name = p_channel AND c.epoch = p_head_epoch AND c.seq = p_head_seq
		RETURNING c.epoch, c.seq INTO o_epoch, o_seq;
	IF NOT FOUND THEN
		-- Had a publication held the row, the UPDATE waited for it, so
		-- this statement sees its key.
		IF p_key IS NOT NULL THEN
			SELECT c.epoch, m.seq INTO o_epoch, o_seq
				FROM {schema}.channels c JOIN {schema}.messages m ON m.channel = c.name
				WHERE c.name = p_channel AND m.key = p_key;
			IF FOUND THEN
				RETURN;
			END IF;
		END IF;
		o_epoch := '';
		o_seq := 0;
		RETURN;
	END IF;
	IF p_key IS NOT NULL THEN
		v_seq := {schema}.keyed(p_channel, p_key);
		IF v_seq IS NOT NULL THEN
			o_seq := v_seq;
			RETURN;
		END IF;
	END IF;
	PERFORM {schema}.store(p_channel, o_seq, p_data, p_inline, p_notify, p_size, p_age_ms, o_epoch, p_meta, p_key);
END
$fn$;

-- keyed returns the Seq of the channel's publication under p_key, or NULL
-- when none has it, for publish and publish_if, which hold the channel's
-- row lock and have taken the next Seq: when one has it, keyed gives that
-- Seq back. Holding the lock, it sees the key of every publication that
-- held it before, so of calls under one key, one publishes.
CREATE OR REPLACE FUNCTION {schema}.keyed(p_channel text, p_key text)
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
	v_seq bigint;
BEGIN
	SELECT m.seq INTO v_seq FROM {schema}.messages m WHERE m.channel = p_channel AND m.key = p_key;
	IF FOUND THEN
		UPDATE {schema}.channels c SET seq = c.seq - 1 WHERE c.name = p_channel;
	END IF;
	RETURN v_seq;
END
$fn$;

-- store inserts the publication numbered p_seq, with its meta and key,
-- trims the history (and with it the keys of the publications it drops)
-- and announces it, for publish and publish_if, which hold the channel's
-- row lock.
CREATE OR REPLACE FUNCTION {schema}.store(
	p_channel text, p_seq bigint, p_data bytea, p_inline text, p_notify text,
	p_size bigint, p_age_ms bigint, p_epoch text, p_meta bytea, p_key text)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
	v_now    timestamptz;
	v_oldest timestamptz;
BEGIN
	-- Taken under the row lock, so times grow with Seq.
	v_now := clock_timestamp();
	INSERT INTO {schema}.messages (channel, seq, data, at, meta, key) VALUES (p_channel, p_seq, p_data, v_now, p_meta, p_key);
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

// ensure creates the schema unless it was created or found before. The
// DDL runs under an advisory lock, because concurrent CREATE ... IF NOT
// EXISTS statements can fail in PostgreSQL.
func (b *Broker) ensure(ctx context.Context) error {
	if b.ensured.Load() {
		return nil
	}
	b.ensureMu.Lock()
	defer b.ensureMu.Unlock()
	if b.ensured.Load() {
		return nil
	}
	create := func(tx pgx.Tx) error {
		h := fnv.New64a()
		h.Write([]byte("github.com/go-live/live/postgres " + b.schema))
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, inSchema(schemaSQL, b.schema)); err != nil {
			return err
		}
		var enc string
		if err := tx.QueryRow(ctx, "SELECT current_setting('server_encoding')").Scan(&enc); err != nil {
			return err
		}
		b.utf8.Store(enc == "UTF8")
		return nil
	}
	err := pgx.BeginFunc(ctx, b.pool, create)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		// unique_violation: another creator's CREATE ... IF NOT EXISTS
		// committed after ours checked, as when the schema is dropped and
		// two brokers make it again at once (TestNodes, DataLost). It
		// exists now: a second run finds it.
		err = pgx.BeginFunc(ctx, b.pool, create)
	}
	if err != nil {
		return fmt.Errorf("creating schema %s: %w", b.schema, err)
	}
	b.ensured.Store(true)
	return nil
}

// missing reports whether err says the schema, a table or a function is
// missing, and if so makes the next call create them again.
func (b *Broker) missing(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "3F000", "42P01", "42883": // invalid_schema_name, undefined_table, undefined_function
			b.ensured.Store(false)
			return true
		}
	}
	return false
}
