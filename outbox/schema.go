package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// schemaVersion is the version of the schema Migrate creates, kept in
// <table>_relay so that a later release can migrate from it.
const schemaVersion = 1

// queries holds a dialect's statements for one table.
type queries struct {
	schema   []string
	publish  string // Postgres: the whole publication, one statement
	nextSeq  string // MySQL, SQLite: take the channel's next number
	insert   string // MySQL, SQLite: insert the row
	head     string
	pending  string
	mark     string // the head of an UPDATE; see Relay.mark
	purge    string
	acquire  string
	release  string
	now      string
	relayRow string
	seed     string
	version  string
	lockOn   string // take the migration lock, "" for none
	lockOff  string
	posOf    string
	idle     string // Postgres: say whether the relay sleeps, and wants NOTIFY
}

// newQueries returns d's statements for table t.
func newQueries(d Dialect, t string) queries {
	var q queries
	r := strings.NewReplacer("{t}", t)
	switch d {
	case Postgres:
		now := "(extract(epoch from clock_timestamp())*1000000)::bigint"
		q.now = now
		q.schema = []string{
			`CREATE TABLE IF NOT EXISTS {t} (
				id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
				channel text NOT NULL,
				seq bigint NOT NULL,
				data text NOT NULL,
				created_at bigint NOT NULL DEFAULT ` + now + `,
				delivered_at bigint,
				position text,
				UNIQUE (channel, seq))`,
			`CREATE INDEX IF NOT EXISTS {t}_pending ON {t} (id) WHERE delivered_at IS NULL`,
			`CREATE INDEX IF NOT EXISTS {t}_delivered ON {t} (delivered_at) WHERE delivered_at IS NOT NULL`,
			`CREATE TABLE IF NOT EXISTS {t}_channels (channel text PRIMARY KEY, seq bigint NOT NULL)`,
			`CREATE TABLE IF NOT EXISTS {t}_relay (name text PRIMARY KEY, epoch text NOT NULL,
				version int NOT NULL, holder text NOT NULL DEFAULT '', expires bigint NOT NULL DEFAULT 0,
				idle boolean NOT NULL DEFAULT false)`,
			`CREATE OR REPLACE FUNCTION {t}_publish(channel text, data json) RETURNS bigint
			LANGUAGE plpgsql AS $fn$
			DECLARE s bigint;
			BEGIN
				INSERT INTO {t}_channels AS c (channel, seq) VALUES ($1, 1)
					ON CONFLICT ON CONSTRAINT {t}_channels_pkey DO UPDATE SET seq = c.seq + 1
					RETURNING c.seq INTO s;
				INSERT INTO {t} (channel, seq, data) VALUES ($1, s, $2::text);
				-- NOTIFY serializes the commits that send one: only when a
				-- listening relay has said it sleeps.
				IF (SELECT idle FROM {t}_relay WHERE name = 'relay') THEN
					PERFORM pg_notify('{t}', '');
				END IF;
				RETURN s;
			END $fn$`,
		}
		q.publish = `SELECT {t}_publish($1, $2::json)`
		q.head = `SELECT seq FROM {t}_channels WHERE channel = $1 FOR SHARE`
		q.pending = `SELECT id, channel, seq, data, created_at, ` + now + ` FROM {t} WHERE delivered_at IS NULL ORDER BY id LIMIT $1`
		q.mark = `UPDATE {t} SET delivered_at = ` + now + `, position = CASE id`
		q.purge = `DELETE FROM {t} WHERE delivered_at < ` + now + ` - $1`
		q.acquire = `UPDATE {t}_relay SET holder = $1, expires = ` + now + ` + $2 WHERE name = 'relay' AND (holder = $1 OR expires < ` + now + `)`
		q.release = `UPDATE {t}_relay SET expires = 0 WHERE name = 'relay' AND holder = $1`
		q.relayRow = `SELECT epoch FROM {t}_relay WHERE name = 'relay'`
		q.seed = `INSERT INTO {t}_relay (name, epoch, version) VALUES ('relay', $1, $2) ON CONFLICT DO NOTHING`
		q.version = `SELECT version FROM {t}_relay WHERE name = 'relay'`
		q.lockOn = `SELECT pg_advisory_xact_lock(hashtext('{t}'))`
		q.posOf = `SELECT position, delivered_at IS NOT NULL FROM {t} WHERE channel = $1 AND seq = $2`
		q.idle = `UPDATE {t}_relay SET idle = $1 WHERE name = 'relay' AND holder = $2`
	case MySQL:
		now := "CAST(UNIX_TIMESTAMP(NOW(6))*1000000 AS SIGNED)"
		q.now = now
		q.schema = []string{
			`CREATE TABLE IF NOT EXISTS {t} (
				id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
				channel VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
				seq BIGINT NOT NULL,
				data LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
				created_at BIGINT NOT NULL DEFAULT (` + now + `),
				delivered_at BIGINT NULL,
				position VARCHAR(100) NULL,
				UNIQUE KEY {t}_channel_seq (channel, seq),
				KEY {t}_pending (delivered_at, id)
			) ENGINE=InnoDB`,
			`CREATE TABLE IF NOT EXISTS {t}_channels (
				channel VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
				seq BIGINT NOT NULL) ENGINE=InnoDB`,
			`CREATE TABLE IF NOT EXISTS {t}_relay (name VARCHAR(16) NOT NULL PRIMARY KEY, epoch VARCHAR(64) NOT NULL,
				version INT NOT NULL, holder VARCHAR(255) NOT NULL DEFAULT '', expires BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB`,
			`DROP PROCEDURE IF EXISTS {t}_publish`,
			`CREATE PROCEDURE {t}_publish(IN p_channel VARCHAR(128) CHARACTER SET ascii, IN p_data LONGTEXT CHARACTER SET utf8mb4)
			BEGIN
				INSERT INTO {t}_channels (channel, seq) VALUES (p_channel, 1) ON DUPLICATE KEY UPDATE seq = seq + 1;
				INSERT INTO {t} (channel, seq, data) SELECT c.channel, c.seq, p_data FROM {t}_channels c WHERE c.channel = p_channel;
			END`,
		}
		q.nextSeq = `INSERT INTO {t}_channels (channel, seq) VALUES (?, LAST_INSERT_ID(1)) ON DUPLICATE KEY UPDATE seq = LAST_INSERT_ID(seq + 1)`
		q.insert = `INSERT INTO {t} (channel, seq, data) VALUES (?, ?, ?)`
		q.head = `SELECT seq FROM {t}_channels WHERE channel = ? LOCK IN SHARE MODE`
		q.pending = `SELECT id, channel, seq, data, created_at, ` + now + ` FROM {t} WHERE delivered_at IS NULL ORDER BY id LIMIT ?`
		q.mark = `UPDATE {t} SET delivered_at = ` + now + `, position = CASE id`
		q.purge = `DELETE FROM {t} WHERE delivered_at < ` + now + ` - ?`
		q.acquire = `UPDATE {t}_relay SET holder = ?, expires = ` + now + ` + ? WHERE name = 'relay' AND (holder = ? OR expires < ` + now + `)`
		q.release = `UPDATE {t}_relay SET expires = 0 WHERE name = 'relay' AND holder = ?`
		q.relayRow = `SELECT epoch FROM {t}_relay WHERE name = 'relay'`
		q.seed = `INSERT IGNORE INTO {t}_relay (name, epoch, version) VALUES ('relay', ?, ?)`
		q.version = `SELECT version FROM {t}_relay WHERE name = 'relay'`
		q.lockOn = `SELECT GET_LOCK('{t}', 60)`
		q.lockOff = `SELECT RELEASE_LOCK('{t}')`
		q.posOf = `SELECT position, delivered_at IS NOT NULL FROM {t} WHERE channel = ? AND seq = ?`
	case SQLite:
		now := "CAST((julianday('now') - 2440587.5)*86400000000 AS INTEGER)"
		q.now = now
		q.schema = []string{
			`CREATE TABLE IF NOT EXISTS {t} (
				id INTEGER PRIMARY KEY AUTOINCREMENT,
				channel TEXT NOT NULL,
				seq INTEGER NOT NULL,
				data TEXT NOT NULL,
				created_at INTEGER NOT NULL DEFAULT (` + now + `),
				delivered_at INTEGER,
				position TEXT,
				UNIQUE (channel, seq))`,
			`CREATE INDEX IF NOT EXISTS {t}_pending ON {t} (id) WHERE delivered_at IS NULL`,
			`CREATE INDEX IF NOT EXISTS {t}_delivered ON {t} (delivered_at) WHERE delivered_at IS NOT NULL`,
			`CREATE TABLE IF NOT EXISTS {t}_channels (channel TEXT PRIMARY KEY, seq INTEGER NOT NULL)`,
			`CREATE TABLE IF NOT EXISTS {t}_relay (name TEXT PRIMARY KEY, epoch TEXT NOT NULL,
				version INTEGER NOT NULL, holder TEXT NOT NULL DEFAULT '', expires INTEGER NOT NULL DEFAULT 0)`,
		}
		q.nextSeq = `INSERT INTO {t}_channels (channel, seq) VALUES (?, 1) ON CONFLICT (channel) DO UPDATE SET seq = seq + 1 RETURNING seq`
		q.insert = `INSERT INTO {t} (channel, seq, data) VALUES (?, ?, ?)`
		q.head = `SELECT seq FROM {t}_channels WHERE channel = ?`
		q.pending = `SELECT id, channel, seq, data, created_at, ` + now + ` FROM {t} WHERE delivered_at IS NULL ORDER BY id LIMIT ?`
		q.mark = `UPDATE {t} SET delivered_at = ` + now + `, position = CASE id`
		q.purge = `DELETE FROM {t} WHERE delivered_at < ` + now + ` - ?`
		q.acquire = `UPDATE {t}_relay SET holder = ?1, expires = ` + now + ` + ?2 WHERE name = 'relay' AND (holder = ?1 OR expires < ` + now + `)`
		q.release = `UPDATE {t}_relay SET expires = 0 WHERE name = 'relay' AND holder = ?`
		q.relayRow = `SELECT epoch FROM {t}_relay WHERE name = 'relay'`
		q.seed = `INSERT OR IGNORE INTO {t}_relay (name, epoch, version) VALUES ('relay', ?, ?)`
		q.version = `SELECT version FROM {t}_relay WHERE name = 'relay'`
		q.posOf = `SELECT position, delivered_at IS NOT NULL FROM {t} WHERE channel = ? AND seq = ?`
	}
	for i, s := range q.schema {
		q.schema[i] = r.Replace(s)
	}
	for _, p := range []*string{&q.publish, &q.nextSeq, &q.insert, &q.head, &q.pending, &q.mark, &q.purge,
		&q.acquire, &q.release, &q.relayRow, &q.seed, &q.version, &q.lockOn, &q.lockOff, &q.posOf, &q.idle} {
		*p = r.Replace(*p)
	}
	return q
}

// Migrate creates the outbox's tables (and on PostgreSQL its publish
// function) if they do not exist, or brings them to this version's
// schema. It is safe to call from several processes at once, and at
// every start.
func (o *Outbox) Migrate(ctx context.Context) error {
	conn, err := o.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	defer conn.Close()
	if err := o.migrate(ctx, conn); err != nil {
		return fmt.Errorf("outbox: migrate %s: %w", o.table, err)
	}
	return nil
}

func (o *Outbox) migrate(ctx context.Context, conn *sql.Conn) error {
	if o.d == MySQL {
		// MySQL's DDL commits as it goes: a named lock serializes migrations.
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, o.q.lockOn).Scan(&got); err != nil {
			return err
		}
		if got.Int64 != 1 {
			return errors.New("could not take the migration lock")
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), o.q.lockOff)
		return o.migrateIn(ctx, conn)
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if o.q.lockOn != "" {
		if _, err := tx.ExecContext(ctx, o.q.lockOn); err != nil {
			return err
		}
	}
	if err := o.migrateIn(ctx, tx); err != nil {
		return err
	}
	return tx.Commit()
}

type execQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (o *Outbox) migrateIn(ctx context.Context, db execQuerier) error {
	for _, s := range o.q.schema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	var b [12]byte
	rand.Read(b[:])
	if _, err := db.ExecContext(ctx, o.q.seed, hex.EncodeToString(b[:]), schemaVersion); err != nil {
		return err
	}
	var v int
	if err := db.QueryRowContext(ctx, o.q.version).Scan(&v); err != nil {
		return err
	}
	if v > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this library's %d", v, schemaVersion)
	}
	return nil
}
